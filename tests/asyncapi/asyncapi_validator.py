"""Runs `validate.mjs`, the AsyncAPI project's own parser, on a document; for the tests here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SETUP = "run `make node-deps` (npm ci --prefix tests/asyncapi) first"


def run_validator(document: Path, *, root: Path = HERE) -> subprocess.CompletedProcess[str]:
    """`node validate.mjs DOCUMENT`, run from `root`; fails the test (never skips it) when Node
    or the parser is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: install Node 20 or newer, then {SETUP}", pytrace=False)
    if not (root / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(f"the AsyncAPI parser is not installed in {root}: {SETUP}", pytrace=False)
    return subprocess.run(  # noqa: S603 - node running the validator of this folder
        [node, str(root / "validate.mjs"), str(document)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def validate(document: Path, *, root: Path = HERE) -> tuple[int, dict[str, Any]]:
    """(exit code, the report `validate.mjs` printed) for the document at `document`."""
    done = run_validator(document, root=root)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"validate.mjs exited {done.returncode} without a report:\n{done.stdout}{done.stderr}"
        )
    return done.returncode, report


def problems(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The diagnostics that fail a document: errors and warnings."""
    return [d for d in report["diagnostics"] if d["severity"] in {"error", "warning"}]


def assert_valid(document: Path) -> dict[str, Any]:
    code, report = validate(document)
    assert problems(report) == [], json.dumps(report, indent=2)
    assert code == 0
    assert report["ok"] is True
    return report
