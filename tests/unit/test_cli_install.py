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
