"""What an installed `sagawire` says about itself: its version, and shell completion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SAGAWIRE = shutil.which("sagawire", path=str(Path(sys.executable).parent)) or "sagawire"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own entry point
        [SAGAWIRE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_version_names_the_installed_distribution() -> None:
    result = run("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sagawire {metadata.version('sagawire')}\n"


@pytest.mark.parametrize(
    ("words", "expected"),
    [("sagawire sa", "sagas"), ("sagawire sagas l", "list"), ("sagawire machines va", "validate")],
)
def test_the_shell_completes_commands(words: str, expected: str) -> None:
    # What bash asks through the completion script `sagawire --install-completion` installs.
    env = {
        "_SAGAWIRE_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    result = run(env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expected]


def test_completion_can_be_installed() -> None:
    result = run("--help")

    assert "--install-completion" in result.stdout
    assert "--show-completion" in result.stdout


def test_the_demo_finds_machines_here_then_in_the_checkout_then_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.cli import demo_cmd  # noqa: PLC0415 - registers `demo` only where needed

    monkeypatch.chdir(tmp_path)
    assert demo_cmd.default_machines_path() == demo_cmd.CHECKOUT_MACHINES  # tests run from one

    monkeypatch.setattr(demo_cmd, "CHECKOUT_MACHINES", tmp_path / "no-checkout")
    assert demo_cmd.default_machines_path() == demo_cmd.INSTALLED_MACHINES

    (tmp_path / "machines").mkdir()
    assert demo_cmd.default_machines_path() == Path("machines")


def test_the_wheel_installs_the_checkout_machines() -> None:
    # pyproject.toml's data-files entry names the files the demo needs once installed.
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert '"share/sagawire/machines" = ["machines/*.yaml"]' in text
    from orchestrator.cli import demo_cmd  # noqa: PLC0415

    assert demo_cmd.INSTALLED_MACHINES.parts[-3:] == ("share", "sagawire", "machines")
    assert (demo_cmd.CHECKOUT_MACHINES / "order.yaml").is_file()
