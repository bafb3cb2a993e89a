"""The dependency rules of the design, checked on the source: a broken rule fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        (
            "orchestrator/core",
            (
                "asyncio",
                "aio_pika",
                "aiormq",
                "pymongo",
                "motor",
                "orchestrator.runtime",
                "orchestrator.adapters",
                "orchestrator.cli",
            ),
        ),
        ("participants_sdk", ("orchestrator",)),
        ("orchestrator/runtime", ("aio_pika", "pymongo", "orchestrator.cli")),
    ],
)
def test_layer_imports_only_what_the_design_allows(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom pymongo import AsyncMongoClient\n")
    assert imported_modules(module) == {"asyncio", "pymongo"}
