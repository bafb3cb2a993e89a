"""The two distributions built from this repository agree: `sagawire` (orchestrator and SDK) and
`sagawire-sdk` (participants_sdk alone, built from participants_sdk/pyproject.toml).

`make dist-check` installs the built wheels into clean environments; these checks catch the
same mistakes sooner, on the source.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "participants_sdk"
IMPORT_NAMES = {"aio-pika": "aio_pika", "pymongo": "pymongo"}


def project(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def requirements(specs: list[str]) -> dict[str, Requirement]:
    return {Requirement(spec).name: Requirement(spec) for spec in specs}


def import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


def top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_both_distributions_have_one_version():
    assert project(SDK / "pyproject.toml")["version"] == project(ROOT / "pyproject.toml")["version"]


def test_every_sdk_dependency_is_a_dependency_of_sagawire_with_the_same_bounds():
    sdk = requirements(project(SDK / "pyproject.toml")["dependencies"])
    sagawire = requirements(project(ROOT / "pyproject.toml")["dependencies"])
    for name, requirement in sdk.items():
        assert name in sagawire, f"sagawire-sdk needs {name}; sagawire must too (it has the SDK)"
        assert sagawire[name].specifier == requirement.specifier, name
    extra = requirements(project(SDK / "pyproject.toml")["optional-dependencies"]["mongodb"])
    assert extra["pymongo"].specifier == sagawire["pymongo"].specifier


def test_the_sdk_leaves_out_the_daemon_dependencies():
    sdk = set(requirements(project(SDK / "pyproject.toml")["dependencies"]))
    assert not sdk & {"pymongo", "typer", "rich", "prometheus-client", "pyyaml"}


def test_the_sdk_imports_only_what_its_distribution_installs():
    declared = {
        import_name(name) for name in requirements(project(SDK / "pyproject.toml")["dependencies"])
    }
    allowed = declared | set(sys.stdlib_module_names) | {"participants_sdk"}
    for path in sorted(SDK.glob("*.py")):
        extra = {"pymongo"} if path.name == "mongo_dedupe.py" else set()  # the mongodb extra
        unexpected = top_level_imports(path) - allowed - extra
        assert not unexpected, f"{path.relative_to(ROOT)} imports {sorted(unexpected)}"


def test_importing_the_sdk_does_not_import_the_optional_store():
    init = top_level_imports(SDK / "__init__.py")
    assert "pymongo" not in init
    text = (SDK / "__init__.py").read_text(encoding="utf-8")
    assert "from participants_sdk.mongo_dedupe import" not in text
