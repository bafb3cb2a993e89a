"""compose.yaml cannot run here (no Docker engine); this keeps it true to the settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from orchestrator.demo.participants import FAILING_SERVICES
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLI_VARIABLES = {"SAGAWIRE_LOG_LEVEL", "SAGAWIRE_LOG_JSON"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def published_ports(service: dict) -> set[int]:
    return {int(str(mapping).split(":")[-1]) for mapping in service.get("ports", [])}


def test_the_services_are_there(compose):
    assert set(compose["services"]) == {
        "rabbitmq",
        "mongodb",
        "orchestrator",
        *FAILING_SERVICES,
    }


def test_every_variable_is_a_setting_and_the_settings_accept_them(compose):
    settings_variables = {f"SAGAWIRE_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for variable in env:
            if variable.startswith("SAGAWIRE_"):
                assert variable in settings_variables | CLI_VARIABLES, (name, variable)
    env = compose["services"]["orchestrator"]["environment"]
    settings = Settings(**{k.removeprefix("SAGAWIRE_").lower(): v for k, v in env.items()})
    assert settings.http_host == "0.0.0.0"  # noqa: S104 - reachable from outside the container


@pytest.mark.parametrize("service", ["orchestrator", *FAILING_SERVICES])
def test_urls_point_at_the_compose_servers(compose, service):
    services = compose["services"]
    env = services[service]["environment"]
    amqp = urlsplit(env["SAGAWIRE_AMQP_URL"])
    assert amqp.hostname == "rabbitmq"
    assert (amqp.port or 5672) in published_ports(services["rabbitmq"])
    if "SAGAWIRE_MONGODB_URL" in env:
        mongo = urlsplit(env["SAGAWIRE_MONGODB_URL"])
        assert mongo.hostname == "mongodb"
        assert (mongo.port or 27017) in published_ports(services["mongodb"])
        assert mongo.path.strip("/") == "sagawire"


def test_the_daemon_endpoint_is_published_and_checked(compose):
    orchestrator = compose["services"]["orchestrator"]
    port = int(orchestrator["environment"]["SAGAWIRE_HTTP_PORT"])
    assert port in published_ports(orchestrator)
    assert f"127.0.0.1:{port}/readyz" in " ".join(orchestrator["healthcheck"]["test"])
    assert orchestrator["command"] == ["sagawire", "run"]


@pytest.mark.parametrize("service", FAILING_SERVICES)
def test_each_participant_runs_its_own_demo_service(compose, service):
    command = compose["services"][service]["command"]
    assert command[:3] == ["python", "-m", "orchestrator.demo.service"]
    assert command[3] == service


def test_the_image_installs_the_project(compose):
    build = compose["services"]["orchestrator"]["build"]
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    assert "pip install" in dockerfile
    for folder in ("orchestrator", "participants_sdk", "machines"):
        assert f"COPY {folder}" in dockerfile
