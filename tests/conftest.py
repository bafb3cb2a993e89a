from __future__ import annotations

import logging
import sys
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


LazyLogger = type(structlog.get_logger())


@pytest.fixture(autouse=True)
def _fresh_logging():
    """CLI tests configure logging onto a stream that closes with the test: reset after each.

    That configuration also caches each module's logger on first use, with its processors, which
    `structlog.testing.capture_logs` would not reach: the cached loggers are dropped too, so that
    each assembles itself again from the configuration in force.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith(("orchestrator.", "participants_sdk.")):
            for value in list(vars(module).values()):
                if isinstance(value, LazyLogger):
                    vars(value).pop("bind", None)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
