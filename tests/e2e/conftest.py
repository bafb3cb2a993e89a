"""Fixtures for the end-to-end tests: servers, a database per test, a clean broker, processes.

The servers come from `tests.services.service_urls()`: a test that finds none fails with what
to do, it never skips. MongoDB gets a database per test, dropped after.

RabbitMQ's queue names are fixed by the wire protocol, so two runs on one virtual host share
queues: one's daemon takes the other's replies (and dead-letters them as unknown sagas), one's
participants take the other's commands. On the local node of `make services` each test therefore
gets a virtual host of its own (created with rabbitmqctl, deleted after). On any broker, each
test first deletes every queue of the topology it uses, so nothing a former test left behind
(on the shared default vhost, where isolation is not possible) reaches it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
import pytest_asyncio
from e2e_broker import reset_broker
from e2e_processes import REPO, SERVICES, ProcessGroup
from pymongo.errors import PyMongoError

from orchestrator.adapters.mongo import MongoSagaStore
from tests.services import ServiceUrls, own_vhost, with_database

SERVICES_SCRIPT = REPO / "scripts" / "services.sh"
QUIET_PROBE = "e2e_quiet_probe"


# -- tools and per-test databases ---------------------------------------------------------


def run_tool(argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command of ours in the checkout; its stdout, or `RuntimeError` with its output."""
    result = subprocess.run(  # noqa: S603 - our scripts, our arguments
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr}{result.stdout}")
    return result.stdout


async def wait_database_quiet(store: MongoSagaStore, *, timeout: float = 60.0) -> bool:  # noqa: ASYNC109
    """Wait until a write on the store's database goes through at once, five times in a row.

    FerretDB v1 (SQLite) goes on running the queued calls of a client that died, and dropping
    a database while it does crashed the server (SIGBUS in SQLite's WAL) and left a file that
    stopped it from starting again. False when the database stayed busy for `timeout` seconds.
    """
    probe = store.database[QUIET_PROBE]
    deadline = time.monotonic() + timeout
    quick = 0
    while quick < 5:
        if time.monotonic() > deadline:
            return False
        began = time.monotonic()
        try:
            await probe.insert_one({"at": began})
        except PyMongoError:
            quick = 0
        else:
            quick = quick + 1 if time.monotonic() - began < 0.1 else 0
        await asyncio.sleep(0.2)
    return True


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def amqp_url(urls: ServiceUrls):
    """The broker URL for this test: a virtual host of its own on the local node."""
    with own_vhost(urls, f"sagawire_e2e_{uuid.uuid4().hex[:8]}", REPO) as url:
        yield url


@pytest_asyncio.fixture
async def clean_broker(amqp_url: str) -> None:
    """Delete every queue of the order topology before the test (the processes redeclare it)."""
    await reset_broker(amqp_url, SERVICES)


@pytest_asyncio.fixture
async def database(urls: ServiceUrls):
    """(URL of a fresh database, a store on it for the test's own reads); dropped afterwards."""
    name = f"sagawire_e2e_{uuid.uuid4().hex[:8]}"
    url = with_database(urls.mongodb, name)
    store = await MongoSagaStore.connect(url)
    # Every collection the test writes exists before the load: FerretDB v1 can deadlock when it
    # creates one while its connections are all busy.
    await store.ensure_indexes()
    await store.database.create_collection(QUIET_PROBE)
    try:
        yield url, store
    finally:
        # Never drop while FerretDB still works on this database (see wait_database_quiet).
        if await wait_database_quiet(store):
            await store.client.drop_database(name)
        else:
            sys.stderr.write(f"e2e: database {name} still busy after 60 s; left, not dropped\n")
        await store.close()


@pytest.fixture
def processes(amqp_url: str, database, tmp_path) -> ProcessGroup:
    """Every process the test starts; all stopped at teardown (SIGTERM, then SIGKILL), before
    the database is dropped (which is why this fixture asks for it)."""
    group = ProcessGroup(tmp_path, amqp_url)
    yield group
    group.close()


@pytest.fixture
def report(capsys) -> Callable[[str], None]:
    """Print a measured figure to the terminal even when pytest captures output."""

    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n    e2e: {line}", end="")  # noqa: T201 - the figures are the point

    return emit


class ServerControl:
    """The fault-injection hooks of `scripts/services.sh`: stop and start one server."""

    def __init__(self, urls: ServiceUrls) -> None:
        self.urls = urls
        self.touched: set[str] = set()

    def _run(self, command: str) -> float:
        if self.urls.source != "make services":
            pytest.fail(
                f"stopping a server needs the local servers of `make services`; these come from "
                f"{self.urls.source}",
                pytrace=False,
            )
        began = time.monotonic()
        try:
            run_tool(["bash", str(SERVICES_SCRIPT), command], timeout=120)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        return time.monotonic() - began

    def stop_rabbitmq(self) -> float:
        self.touched.add("rabbitmq")
        return self._run("stop-rabbitmq")

    def start_rabbitmq(self) -> float:
        return self._run("start-rabbitmq")

    def stop_mongo(self) -> float:
        self.touched.add("mongo")
        return self._run("stop-mongo")

    def start_mongo(self) -> float:
        return self._run("start-mongo")

    def restore(self) -> None:
        """Start whatever the test stopped (a no-op for a server that runs)."""
        if "rabbitmq" in self.touched:
            self.start_rabbitmq()
        if "mongo" in self.touched:
            self.start_mongo()


@pytest.fixture
def servers(urls: ServiceUrls, amqp_url: str, processes: ProcessGroup):
    """Set up after the vhost and the processes, so torn down first: the servers run again
    before the processes are stopped and the vhost is deleted."""
    control = ServerControl(urls)
    try:
        yield control
    finally:
        control.restore()
