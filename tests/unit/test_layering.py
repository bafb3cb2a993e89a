"""The dependency rules of the design, checked on the source: a broken rule fails here."""

from __future__ import annotations

import ast
import sys
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
        ("orchestrator/gateway", ("orchestrator.cli", "orchestrator.daemon")),
    ],
)
def test_layer_imports_only_what_the_design_allows(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom pymongo import AsyncMongoClient\n")
    assert imported_modules(module) == {"asyncio", "pymongo"}


CORE_MAY_IMPORT = (
    "orchestrator.core",
    "pydantic",  # the definitions' and the saga's models
    "pydantic_core",  # the error details of a definition that fails to validate
    "orchestrator.errors",  # the exception hierarchy: imports nothing (checked below)
    "yaml",  # machine files are parsed in the core (core.machines reads them, no other I/O)
    # The wire contract the core speaks: pure, no I/O.
    "participants_sdk.protocol",
    "participants_sdk.headers",
    "participants_sdk.limits",
)


def outside(folder: str, allowed: tuple[str, ...]) -> list[str]:
    """Imports of `folder` that are neither the standard library nor under `allowed`."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            top = module.partition(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


def test_the_core_imports_only_itself_the_standard_library_and_the_wire_contract() -> None:
    assert outside("orchestrator/core", CORE_MAY_IMPORT) == []


def test_the_exceptions_the_core_raises_import_only_the_standard_library() -> None:
    path = ROOT / "orchestrator" / "errors.py"
    foreign = [
        module
        for module in sorted(imported_modules(path))
        if module.partition(".")[0] not in {*sys.stdlib_module_names, "__future__"}
    ]
    assert foreign == []


def test_the_sdk_never_imports_the_orchestrator() -> None:
    assert offending("participants_sdk", ("orchestrator",)) == []


def test_the_outside_check_sees_a_foreign_import(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "m.py").write_text(
        "import json\nimport aio_pika\nfrom participants_sdk import memory\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert outside("pkg", CORE_MAY_IMPORT) == [
        "pkg/m.py imports aio_pika",
        "pkg/m.py imports participants_sdk",
    ]


PACKAGES = ("orchestrator", "participants_sdk")


def _package_modules(root: Path) -> dict[str, Path]:
    paths = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return paths


def _imported_names(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + [base] * bool(base))
            targets.update(
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            )
    return targets


def _owning_module(target: str, known: dict[str, Path]) -> str:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of `PACKAGES` it imports (anywhere in it: function bodies and
    `TYPE_CHECKING` blocks too); `from pkg import sub` counts as importing `pkg.sub`."""
    known = _package_modules(root)
    graph = {}
    for name, path in known.items():
        owners = {_owning_module(t, known) for t in _imported_names(name, path, known)}
        graph[name] = {owner for owner in owners if owner and owner != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module."""
    found: list[list[str]] = []
    seen: set[str] = set()

    def reach(start: str) -> set[str]:
        todo, reached = [start], set()
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in reached:
                    reached.add(nxt)
                    todo.append(nxt)
        return reached

    reachable = {name: reach(name) for name in graph}
    for name in sorted(graph):
        if name in seen or name not in reachable[name]:
            continue
        group = sorted(other for other in reachable[name] if name in reachable[other])
        seen.update(group)
        found.append(group)
    return found


def test_no_import_circle_in_the_packages() -> None:
    assert cycles(module_graph()) == []


def test_the_circle_check_sees_a_circle(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "a.py").write_text("from orchestrator import b\n")
    (tmp_path / "orchestrator" / "b.py").write_text(
        "def later():\n    from orchestrator.a import x\n"
    )
    assert cycles(module_graph(tmp_path)) == [["orchestrator.a", "orchestrator.b"]]
