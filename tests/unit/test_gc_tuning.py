"""`tune_gc()` sets the collector for long-running message handlers."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from participants_sdk import tune_gc
from participants_sdk.gc_tuning import GC_THRESHOLDS


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_collects_less_often_and_freezes_what_exists() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # CPython's default young-generation threshold
    assert gc.get_freeze_count() > 0
