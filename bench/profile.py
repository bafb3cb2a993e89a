"""Profile the daemon under load: py-spy samples it while saturating sagas run.

    python -m bench.profile [--store memory|mongodb] [--process daemon|participants] [--sagas 2000]

Prints the functions that hold the most samples, on their own (self) and with what they call
(total), and writes the collapsed stacks to reports/profile-<process>-<store>.txt (flame graph
input).
Needs py-spy (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.sagawire import ROOT, Rig
from tests.services import service_urls

_OURS = {
    path.name
    for package in ("orchestrator", "participants_sdk")
    for path in (ROOT / package).rglob("*.py")
}
"""File names of Sagawire's modules: py-spy's frames name the file, not the package."""


def top(collapsed: Path, count: int = 15) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        weight = int(n)
        samples += weight
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    lines = [f"{samples} samples; self:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(count)]
    lines.append("total (with callees), Sagawire's own functions:")
    ours = [(k, v) for k, v in total.most_common() if k.rsplit(" ", 1)[-1] in _OURS]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in ours[:count]]
    return "\n".join(lines)


def _frame(raw: str) -> str:
    """`function (path/file.py:line)` -> `function file.py`."""
    function, _, where = raw.partition(" (")
    return f"{function} {where.split(':')[0].rsplit('/', 1)[-1]}"


def _record(spy: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` 200 times a second into `out`, until SIGINT."""
    return subprocess.Popen(  # noqa: S603 - py-spy on our own daemon
        [
            *(spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200"),
            *("--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def profile(store: str, process: str, sagas: int) -> None:
    urls = service_urls(ROOT)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="sagawire-profile-") as tmp:
        rig = Rig(urls.amqp, urls.mongodb, store, Path(tmp))
        await rig.start()
        try:
            await rig.run_load(50, 1000)
            out = ROOT / "reports" / f"profile-{process}-{store}.txt"
            out.parent.mkdir(exist_ok=True)
            recorder = _record(spy, rig.processes[process].pid, out)
            figures = await rig.run_load(sagas, 100_000)
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
        finally:
            rig.stop()
    print(f"{figures['steps_per_s']} steps/s while sampled")  # noqa: T201
    print(top(out))  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["memory", "mongodb"], default="memory")
    parser.add_argument("--process", choices=["daemon", "participants"], default="daemon")
    parser.add_argument("--sagas", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(profile(args.store, args.process, args.sagas))


if __name__ == "__main__":
    main()
