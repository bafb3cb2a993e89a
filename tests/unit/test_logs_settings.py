from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from orchestrator.logs import redact, setup_logging
from orchestrator.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        (
            "mongodb+srv://app:s3cr%40t@cluster0.example/db",
            "mongodb+srv://app:***@cluster0.example/db",
        ),
        (
            "cannot reach amqp://u:p@h/ and mongodb://a:b@c/",
            "cannot reach amqp://u:***@h/ and mongodb://a:***@c/",
        ),
        ("amqp://app:p@ss@host:5672/vh", "amqp://app:***@host:5672/vh"),
        ("amqp://localhost/", "amqp://localhost/"),
        ("mongodb://user@host/", "mongodb://user@host/"),
        ("no url here", "no url here"),
    ],
)
def test_redact_hides_passwords_only(text, expected):
    assert redact(text) == expected


def test_no_log_line_carries_a_password():
    stream = io.StringIO()
    setup_logging("DEBUG", json=True, stream=stream)
    log = structlog.get_logger("t")
    log.info("connecting to amqp://svc:hunter2@rabbit:5672/", url="mongodb://db:hunter2@mongo/x")
    log.info("nested", detail={"urls": ["amqp://a:hunter2@b/"]})
    try:
        raise ConnectionError("refused by amqp://svc:hunter2@rabbit:5672/")  # noqa: TRY301 - a logged exception is the point
    except ConnectionError:
        log.exception("failed")
    log.warning("error value", error=ConnectionError("at mongodb://x:hunter2@y/"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert "hunter2" not in stream.getvalue()
    first = json.loads(lines[0])
    assert first["event"] == "connecting to amqp://svc:***@rabbit:5672/"
    assert first["url"] == "mongodb://db:***@mongo/x"
    assert "ConnectionError" in json.loads(lines[2])["exception"]


def test_settings_come_from_the_environment_and_print_redacted(monkeypatch):
    monkeypatch.setenv("SAGAWIRE_AMQP_URL", "amqp://app:topsecret@rabbit:5672/prod")
    monkeypatch.setenv("SAGAWIRE_MONGODB_URL", "mongodb://app:topsecret@mongo:27017/sagas")
    monkeypatch.setenv("SAGAWIRE_MAX_LIVE_ACTORS", "500")
    settings = Settings()
    assert settings.amqp_url == "amqp://app:topsecret@rabbit:5672/prod"
    assert settings.max_live_actors == 500
    assert settings.runtime().max_live_actors == 500
    shown = json.dumps(settings.redacted())
    assert "topsecret" not in shown
    assert "amqp://app:***@rabbit:5672/prod" in shown


def test_a_bad_url_is_refused_without_echoing_its_password():
    with pytest.raises(ValueError, match="must start with amqp://") as caught:
        Settings(amqp_url="http://app:topsecret@rabbit/")
    messages = [e["msg"] for e in caught.value.errors()]  # type: ignore[attr-defined]
    assert all("topsecret" not in m for m in messages)


def test_library_log_lines_are_redacted_and_only_warnings():
    stream = io.StringIO()
    setup_logging("DEBUG", json=True, stream=stream)
    logging.getLogger("aio_pika.robust_connection").warning("lost amqp://u:hunter2@h/")
    logging.getLogger("aio_pika").info("chatter")
    [line] = stream.getvalue().splitlines()
    assert json.loads(line) == {
        "event": "lost amqp://u:***@h/",
        "logger": "aio_pika.robust_connection",
        "level": "warning",
        "timestamp": json.loads(line)["timestamp"],
    }


def test_the_store_is_mongodb_unless_memory_is_asked_for(monkeypatch):
    assert Settings().store == "mongodb"
    monkeypatch.setenv("SAGAWIRE_STORE", "memory")
    assert Settings().store == "memory"
    monkeypatch.setenv("SAGAWIRE_STORE", "redis")
    with pytest.raises(ValueError, match="store"):
        Settings()
