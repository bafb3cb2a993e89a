// Checks an AsyncAPI document with the AsyncAPI project's own parser.
//
//   node tests/asyncapi/validate.mjs FILE
//
// Prints {"file", "ok", "diagnostics": [{severity, code, message, path}]} as JSON on stdout.
// Exits 0 when no diagnostic is an error or a warning, 1 when one is, 2 on a usage problem.
// Information and hints (such as "a newer AsyncAPI version exists") are printed, not failed on.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

// Spectral's DiagnosticSeverity: 0 error, 1 warning, 2 information, 3 hint.
const SEVERITIES = ['error', 'warning', 'information', 'hint'];
const FAILING = new Set(['error', 'warning']);

const file = process.argv[2];
if (!file || process.argv.length > 3) {
  process.stderr.write('usage: node validate.mjs FILE\n');
  process.exit(2);
}

let text;
try {
  text = await readFile(file, 'utf8');
} catch (error) {
  process.stderr.write(`cannot read ${file}: ${error.message}\n`);
  process.exit(2);
}

const { diagnostics } = await new Parser().parse(text, { source: file });
const found = diagnostics.map((d) => ({
  severity: SEVERITIES[d.severity] ?? String(d.severity),
  code: String(d.code),
  message: d.message,
  path: d.path.join('/'),
}));
const ok = !found.some((d) => FAILING.has(d.severity));
process.stdout.write(`${JSON.stringify({ file, ok, diagnostics: found }, null, 2)}\n`);
process.exit(ok ? 0 : 1);
