from __future__ import annotations

import logging

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_logging():
    """CLI tests configure logging onto a stream that closes with the test: reset after each."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
