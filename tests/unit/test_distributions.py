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
EXTRA_IMPORTS = {
    "mongo_dedupe.py": {"pymongo"},  # the mongodb extra
    "prometheus.py": {"prometheus_client"},  # the metrics extra
    "tracing.py": {"opentelemetry"},  # the otel extra, imported only where it is installed
}
"""The SDK modules that import what only an extra installs, and what they import."""


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
    # An SDK extra's package is in sagawire too: a dependency, or in one of its extras.
    offered = dict(sagawire)
    for extra in project(ROOT / "pyproject.toml")["optional-dependencies"].values():
        offered.update({n: r for n, r in requirements(extra).items() if n not in offered})
    for extra in project(SDK / "pyproject.toml")["optional-dependencies"].values():
        for name, requirement in requirements(extra).items():
            assert name in offered, f"sagawire-sdk's extra needs {name}; sagawire offers none"
            assert offered[name].specifier == requirement.specifier, name


def test_the_sdk_leaves_out_the_daemon_dependencies():
    sdk = set(requirements(project(SDK / "pyproject.toml")["dependencies"]))
    assert not sdk & {"pymongo", "typer", "rich", "prometheus-client", "pyyaml"}


def test_the_sdk_imports_only_what_its_distribution_installs():
    declared = {
        import_name(name) for name in requirements(project(SDK / "pyproject.toml")["dependencies"])
    }
    allowed = declared | set(sys.stdlib_module_names) | {"participants_sdk"}
    for path in sorted(SDK.glob("*.py")):
        unexpected = top_level_imports(path) - allowed - EXTRA_IMPORTS.get(path.name, set())
        assert not unexpected, f"{path.relative_to(ROOT)} imports {sorted(unexpected)}"


def test_importing_the_sdk_does_not_import_the_optional_modules():
    init = top_level_imports(SDK / "__init__.py")
    assert not init & {"pymongo", "prometheus_client"}
    text = (SDK / "__init__.py").read_text(encoding="utf-8")
    for module in EXTRA_IMPORTS:
        assert f"from participants_sdk.{module.removesuffix('.py')} import" not in text
