"""Write the table of a reliability run into docs/reliability.md.

    python scripts/reliability_table.py [REPORT] [DOC]

REPORT defaults to reports/reliability.json (what `make chaos` writes), DOC to
docs/reliability.md. The part of DOC between the `<!-- reliability:begin -->` and
`<!-- reliability:end -->` lines is replaced; the rest is left as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- reliability:begin -->"
END = "<!-- reliability:end -->"


def _span(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not values:
        return "-"
    if not known:
        return "never"
    low, high = min(known), max(known)
    text = f"{low:.1f}" if low == high else f"{low:.1f}-{high:.1f}"
    missing = len(values) - len(known)
    return text + (f" ({missing} never)" if missing else "")


def _row(name: str, entry: dict[str, Any]) -> str:
    finished = entry["finished"]
    recoveries = entry["recovery"]
    first = _span([r["restart_to_first_completion_s"] for r in recoveries])
    steady = _span([r["restart_to_steady_s"] for r in recoveries])
    letters = sum(entry["dead_lettered"].values())
    cells = [
        f"`{name}`",
        str(entry["sagas_started"]),
        str(finished.get("succeeded", 0)),
        str(finished.get("compensated", 0)),
        str(entry["lost"]),
        str(entry["applied_twice"]),
        str(letters),
        first,
        steady,
        f"{entry['duration_s']:.0f}",
        "yes" if entry["passed"] else "**no**",
    ]
    return "| " + " | ".join(cells) + " |"


def render(report: dict[str, Any]) -> str:
    scenarios: dict[str, dict[str, Any]] = report["scenarios"]
    variants = sorted({entry.get("variant", "?") for entry in scenarios.values()})
    lines = [
        (
            f"Run of {report.get('updated_at', '?')} ({', '.join(variants)} sizes, "
            f"{report.get('machine', {}).get('cpus', '?')} CPUs), from `reports/reliability.json`:"
        ),
        "",
        (
            "| scenario | sagas | succeeded | compensated | lost | applied twice | dead-lettered "
            "| restart to first completion (s) | restart to steady throughput (s) | took (s) "
            "| passed |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [_row(name, entry) for name, entry in scenarios.items()]
    lines += ["", "What each scenario does and proves:", ""]
    for name, entry in scenarios.items():
        lines.append(f"- `{name}`: {entry['title']}. {entry['proves']}")
        letters = entry["dead_lettered"]
        if letters:
            shown = "; ".join(f"{reason} ({n})" for reason, n in sorted(letters.items()))
            lines.append(f"  Dead-lettered: {shown}.")
        if entry.get("details"):
            lines.append(f"  Details: `{json.dumps(entry['details'], sort_keys=True)}`.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    report_path = Path(argv[1]) if len(argv) > 1 else ROOT / "reports" / "reliability.json"
    doc_path = Path(argv[2]) if len(argv) > 2 else ROOT / "docs" / "reliability.md"
    if not report_path.is_file():
        sys.stderr.write(f"error: {report_path} does not exist; run `make chaos` first\n")
        return 1
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        table = render(report)
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"error: {report_path} is not a reliability report: {exc!r}\n")
        return 1
    doc = doc_path.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        sys.stderr.write(f"error: {doc_path} lacks the {BEGIN} and {END} lines\n")
        return 1
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc_path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")
    sys.stdout.write(f"wrote the table of {len(report['scenarios'])} scenarios to {doc_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
