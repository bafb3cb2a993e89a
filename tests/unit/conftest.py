"""The machines most tests of `decide()` run, as fixtures (see decide_support.py)."""

from __future__ import annotations

import pytest
from decide_support import ORDER, TRIP, machine

from orchestrator.core.definition import MachineDefinition


@pytest.fixture
def order() -> MachineDefinition:
    return machine(ORDER)


@pytest.fixture
def trip() -> MachineDefinition:
    return machine(TRIP)
