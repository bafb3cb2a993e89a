"""`sagawire machines validate`: exit codes, one line per machine version, problems on stderr."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Registers `machines` on the app without the other command modules, so that these tests
# depend on this command alone; test_commands_module_registers_machines covers the real wiring.
import orchestrator.cli.machines_cmd  # noqa: F401
from orchestrator.cli.app import app
from orchestrator.core.machines import load_machines

MACHINES = Path(__file__).resolve().parents[2] / "machines"

GOOD = textwrap.dedent(
    """\
    machine: shop
    version: 1
    initial: pay
    states:
      pay:
        command: {service: payment, name: pay}
        on: {paid: done, declined: compensate}
      done: {final: succeeded}
    """
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_shipped_machines(runner: CliRunner) -> None:
    result = runner.invoke(app, ["machines", "validate", str(MACHINES)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    registry = load_machines(MACHINES)
    assert len(lines) == len(registry) >= 2
    for line, definition in zip(lines, registry, strict=True):
        assert f"{definition.machine} v{definition.version}:" in line
        assert f"{len(definition.states)} states" in line
        assert definition.content_hash()[:12] in line
        assert line.startswith(str(MACHINES))


def test_validate_defaults_to_the_machines_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / "shop.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["machines", "validate"])
    assert result.exit_code == 0, result.output
    assert "shop v1: 2 states, hash " in result.stdout


def test_validate_reports_every_problem_on_stderr(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("paid: done", "paid: dnoe").replace("version: 1", "version: 2"))
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yml").write_text("machine: shop\n  version: 3\n")
    result = runner.invoke(app, ["machines", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        f"{bad}: machine 'shop' v2: state 'pay': field 'on.paid.goto': unknown target state 'dnoe'"
        in result.stderr
    )
    assert f"{tmp_path / 'broken.yml'}: line 2:" in result.stderr
    assert "unreachable" in result.stderr  # `done` lost its only way in
    assert result.stderr.splitlines()[-1] == f"3 problem(s) in {tmp_path}"


def test_validate_one_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(GOOD + "---\n" + GOOD.replace("version: 1", "version: 2"))
    result = runner.invoke(app, ["machines", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert [line.split(": ")[1] for line in result.stdout.splitlines()] == ["shop v1", "shop v2"]


def test_validate_missing_path_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["machines", "validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr
    assert result.stdout == ""


def test_validate_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(app, ["machines", "validate", "--help"])
    assert result.exit_code == 0
    assert "sagawire machines validate machines/order.yaml" in result.stdout


def test_commands_module_registers_machines(runner: CliRunner) -> None:
    importlib.import_module("orchestrator.cli.commands")  # what `sagawire` imports at start
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "machines" in result.stdout
