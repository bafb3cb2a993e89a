from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog():
    """CLI tests configure logging onto a stream that closes with the test: reset after each."""
    yield
    structlog.reset_defaults()
