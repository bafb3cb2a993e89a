from __future__ import annotations

import pytest

from tests import services as ts


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.delenv(ts.AMQP_VARIABLE, raising=False)
    monkeypatch.delenv(ts.MONGODB_VARIABLE, raising=False)
    monkeypatch.setattr(ts, "_docker_engine_answers", lambda: False)
    ts.service_urls.cache_clear()
    yield
    ts.service_urls.cache_clear()


def test_the_environment_comes_first(monkeypatch, tmp_path):
    (tmp_path / ".services").mkdir()
    (tmp_path / ".services" / "env").write_text(
        f"{ts.AMQP_VARIABLE}=amqp://file/\n{ts.MONGODB_VARIABLE}=mongodb://file/\n"
    )
    monkeypatch.setenv(ts.AMQP_VARIABLE, "amqp://env/")
    monkeypatch.setenv(ts.MONGODB_VARIABLE, "mongodb://env/")
    assert ts.service_urls(tmp_path) == ts.ServiceUrls(
        "amqp://env/", "mongodb://env/", "environment"
    )


def test_then_what_make_services_started(tmp_path):
    (tmp_path / ".services").mkdir()
    (tmp_path / ".services" / "env").write_text(
        f"{ts.AMQP_VARIABLE}=amqp://guest:guest@127.0.0.1:5672/\n"
        f"{ts.MONGODB_VARIABLE}=mongodb://127.0.0.1:27017/\n"
    )
    urls = ts.service_urls(tmp_path)
    assert (urls.amqp, urls.mongodb, urls.source) == (
        "amqp://guest:guest@127.0.0.1:5672/",
        "mongodb://127.0.0.1:27017/",
        "make services",
    )


def test_with_nothing_it_says_how_to_get_servers(tmp_path):
    with pytest.raises(ts.ServicesUnavailable, match=r"make services.*SAGAWIRE_TEST_AMQP_URL"):
        ts.service_urls(tmp_path)


def test_a_docker_engine_means_containers(monkeypatch, tmp_path):
    monkeypatch.setattr(ts, "_docker_engine_answers", lambda: True)
    fake = ts.ServiceUrls("amqp://c/", "mongodb://c/", "testcontainers")
    monkeypatch.setattr(ts, "_from_containers", lambda: fake)
    assert ts.service_urls(tmp_path) is fake
