"""Where the tests find RabbitMQ and MongoDB.

In this order: the URLs in `SAGAWIRE_TEST_AMQP_URL` / `SAGAWIRE_TEST_MONGODB_URL`; the servers
`make services` started (their URLs are in `.services/env`); containers started with
testcontainers when a Docker engine answers. With none of these, `ServicesUnavailable` says how
to provide them: a test that needs a server fails, it never skips.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

AMQP_VARIABLE = "SAGAWIRE_TEST_AMQP_URL"
MONGODB_VARIABLE = "SAGAWIRE_TEST_MONGODB_URL"
HOW_TO = (
    "run `make services` (local RabbitMQ and FerretDB), set {variable}, or start a Docker engine "
    "for testcontainers"
)


RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


class ServicesUnavailable(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class ServiceUrls:
    amqp: str
    mongodb: str
    source: str
    """`environment`, `make services` or `testcontainers`."""


def _env_file(root: Path) -> dict[str, str]:
    path = root / ".services" / "env"
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and value.strip():
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - comes with testcontainers

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means: no engine to use
        return False
    return True


_containers: list[Any] = []


def _from_containers() -> ServiceUrls:
    from testcontainers.mongodb import MongoDbContainer  # noqa: PLC0415
    from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415

    rabbit = RabbitMqContainer("rabbitmq:3.13-management").start()
    mongo = MongoDbContainer("mongo:7").start()
    _containers.extend([rabbit, mongo])
    atexit.register(_stop_containers)
    host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
    return ServiceUrls(
        amqp=f"amqp://guest:guest@{host}:{port}/",
        mongodb=mongo.get_connection_url(),
        source="testcontainers",
    )


def _stop_containers() -> None:
    while _containers:
        with contextlib.suppress(Exception):
            _containers.pop().stop()


@functools.cache
def service_urls(root: Path | None = None) -> ServiceUrls:
    """The test servers' URLs, or `ServicesUnavailable` naming what to do."""
    root = root or Path.cwd()
    amqp, mongodb = os.environ.get(AMQP_VARIABLE), os.environ.get(MONGODB_VARIABLE)
    if amqp and mongodb:
        return ServiceUrls(amqp, mongodb, "environment")
    started = _env_file(root)
    amqp = amqp or started.get(AMQP_VARIABLE)
    mongodb = mongodb or started.get(MONGODB_VARIABLE)
    if amqp and mongodb:
        return ServiceUrls(amqp, mongodb, "make services")
    if _docker_engine_answers():
        return _from_containers()
    missing = AMQP_VARIABLE if not amqp else MONGODB_VARIABLE
    raise ServicesUnavailable(
        f"no {'RabbitMQ' if not amqp else 'MongoDB'} for the tests: "
        + HOW_TO.format(variable=missing)
    )


def with_database(base: str, database: str) -> str:
    """`base` (a MongoDB URL) with its path set to `database`, the rest kept.

    A URL with credentials and no `authSource` authenticated against `admin` before; with a
    path it would authenticate against that database, so `authSource=admin` is kept explicit.
    """
    parts = urlsplit(base)
    query = dict(parse_qsl(parts.query))
    if "@" in parts.netloc and "authSource" not in query:
        query["authSource"] = parts.path.strip("/") or "admin"
    return urlunsplit(parts._replace(path=f"/{database}", query=urlencode(query)))


# -- virtual hosts of their own on the local node ------------------------------------------


def services_state_dir(root: Path) -> Path:
    """Where `scripts/services.sh` keeps its servers' state (as the script computes it)."""
    return Path(os.environ.get("SAGAWIRE_SERVICES_DIR") or root / ".services")


def rabbitmqctl(root: Path, amqp_url: str, *args: str) -> str:
    """Run `rabbitmqctl` against the node `make services` started (its cookie, its node name)."""
    port = urlsplit(amqp_url).port or 5672
    env = {
        **os.environ,
        "HOME": str(services_state_dir(root) / "rabbitmq"),
        "RABBITMQ_NODENAME": f"sagawire-{port}@localhost",
    }
    argv = [RABBITMQCTL, "--quiet", *args]
    result = subprocess.run(  # noqa: S603 - Debian's rabbitmqctl, our arguments
        argv, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr}{result.stdout}")
    return result.stdout


def with_vhost(amqp_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(amqp_url)._replace(path=f"/{vhost}"))


@contextlib.contextmanager
def own_vhost(urls: ServiceUrls, vhost: str, root: Path) -> Iterator[str]:
    """The URL of virtual host `vhost`, made for the block on the node of `make services`.

    RabbitMQ's queue names are fixed by the wire protocol, so tests sharing a virtual host share
    queues. Elsewhere (URLs from the environment, containers) there is no rabbitmqctl to reach:
    the URL is given unchanged, and the caller cleans the queues it uses first.
    """
    if urls.source != "make services":
        yield urls.amqp
        return
    user = urlsplit(urls.amqp).username or "guest"
    rabbitmqctl(root, urls.amqp, "add_vhost", vhost)
    try:
        rabbitmqctl(root, urls.amqp, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(urls.amqp, vhost)
    finally:
        try:
            rabbitmqctl(root, urls.amqp, "delete_vhost", vhost)
        except RuntimeError as exc:
            # Not a failure of the tests: say it, without failing them (warnings are errors).
            sys.stderr.write(f"tests: virtual host {vhost} left behind: {exc}\n")
