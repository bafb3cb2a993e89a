"""Every machine the README shows loads and validates as `sagawire machines validate` would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.core.machines import load_machine_file

README = Path(__file__).resolve().parents[2] / "README.md"
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_machines() -> list[str]:
    return [
        block
        for block in YAML_BLOCK.findall(README.read_text(encoding="utf-8"))
        if re.search(r"^machine: ", block, re.MULTILINE)
    ]


def test_the_readme_shows_machines_with_every_kind_of_state():
    kinds = "\n".join(readme_machines())
    assert len(readme_machines()) >= 2
    for key in ("command:", "compensation:", "parallel:", "final:"):
        assert key in kinds


@pytest.mark.parametrize("text", readme_machines(), ids=lambda text: text.split("\n")[0])
def test_a_readme_machine_validates(text, tmp_path):
    path = tmp_path / "machine.yaml"
    path.write_text(text, encoding="utf-8")
    [definition] = load_machine_file(path)
    assert definition.states
