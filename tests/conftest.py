from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog

from tests.services import ServicesUnavailable, ServiceUrls, service_urls

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def urls() -> ServiceUrls:
    """The test servers (see tests.services): a test without them fails."""
    try:
        return service_urls(REPO)
    except ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


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
