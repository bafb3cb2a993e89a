// The service's dedupe store: an append-only file, one JSON line per stored reply,
//   {"key": "<idempotency key>", "event": "<event name>", "body": {...}, "rejected": false}
// For this demo the line IS the effect of the command (the reservation), so effect and dedupe
// record are one write: a crash can lose a reply, never apply a key twice.
import fs from 'node:fs';

export class Journal {
  constructor(path) {
    this.path = path;
    this.replies = new Map(); // idempotency key -> {event, body, rejected}
    const text = fs.existsSync(path) ? fs.readFileSync(path, 'utf8') : '';
    const end = text.lastIndexOf('\n') + 1;
    if (end < text.length) {
      // A last line cut short (the machine died mid-write) was never answered: drop it, so that
      // the next line starts on a line of its own.
      fs.truncateSync(path, Buffer.byteLength(text.slice(0, end)));
      this.droppedPartialLine = true;
    }
    const lines = text.slice(0, end).split('\n').slice(0, -1);
    for (const [n, line] of lines.entries()) {
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        throw new Error(`journal ${path}: line ${n + 1} is not JSON; refusing to start on a damaged journal`);
      }
      this.replies.set(record.key, { event: record.event, body: record.body, rejected: record.rejected });
    }
    this.fd = fs.openSync(path, 'a'); // O_APPEND: each write lands whole at the end
  }

  get(key) {
    return this.replies.get(key);
  }

  // One synchronous write per line: once it returns the kernel holds the line, so a process
  // killed right after loses nothing (no fsync: a power loss may cut the last line short).
  record(key, event, body, rejected) {
    fs.writeSync(this.fd, `${JSON.stringify({ key, event, body, rejected })}\n`);
    this.replies.set(key, { event, body, rejected });
  }

  close() {
    fs.closeSync(this.fd);
  }
}
