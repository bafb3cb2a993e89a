"""`sagawire sagas list|show` against a real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.cli import commands  # noqa: F401 - registers the sub-commands
from orchestrator.cli.app import app
from orchestrator.cli.sagas_cmd import parse_time
from orchestrator.core.saga import HistoryEntry, SagaStatus
from tests.contract.conftest import build_saga
from tests.services import with_database

pytestmark = pytest.mark.mongo

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def at(minutes: float) -> dt.datetime:
    return NOW + dt.timedelta(minutes=minutes)


def sagas():
    """Seven sagas: which are stuck, finished, on which machine, with which label, is known."""
    overdue = build_saga("overdue", deadline=at(-10), outbox=False)  # waiting past its deadline
    waiting = build_saga("waiting", deadline=at(+10), outbox=False)
    flagged = build_saga("flagged", status=SagaStatus.FAILED, deadline=None, outbox=False)
    flagged.flagged = "compensation of execute_payment failed: card_gone"
    flagged.pending = []
    done = [
        build_saga(f"done-{n}", status=SagaStatus.SUCCEEDED, deadline=None, outbox=False)
        for n in range(3)
    ]
    other = build_saga("other", deadline=at(-30), outbox=False)
    other.machine = "refund"
    result = [overdue, waiting, flagged, *done, other]
    for minutes, saga in enumerate(result):
        saga.updated_at = at(-minutes)
        if saga.status is SagaStatus.SUCCEEDED:
            saga.pending, saga.label, saga.finished_at = [], "DELIVERED", saga.updated_at
    for n, saga in enumerate(done, start=1):  # steps that took n x 100 ms and n x 200 ms
        saga.history = timeline(at(-60), [("execute_payment", 0.1 * n), ("prepare_order", 0.2 * n)])
    return result


def timeline(start: dt.datetime, steps: list[tuple[str, float]]) -> list[HistoryEntry]:
    """A history where each step's command got its reply after the given seconds."""
    entries = [HistoryEntry(at=start, event="started")]
    for index, (step, seconds) in enumerate(steps):
        sent = start + dt.timedelta(seconds=index + 1)
        entries.append(HistoryEntry(at=sent, event="command_sent", step=step, attempt=1))
        replied = sent + dt.timedelta(seconds=seconds)
        entries.append(HistoryEntry(at=replied, event="replied", step=step, attempt=1))
    return entries


@pytest.fixture(scope="module")
def url(urls):
    """A database holding `sagas()`, its URL; dropped after the module."""
    name = f"sagawire_cli_{uuid.uuid4().hex[:8]}"
    database_url = with_database(urls.mongodb, name)

    async def fill() -> None:
        store = await MongoSagaStore.connect(database_url)
        try:
            await store.ensure_indexes()
            for saga in sagas():
                await store.insert(saga)
        finally:
            await store.close()

    async def drop() -> None:
        store = await MongoSagaStore.connect(database_url)
        try:
            await store.client.drop_database(name)
        finally:
            await store.close()

    asyncio.run(fill())
    yield database_url
    asyncio.run(drop())


def sagawire(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def listed(url: str, *args: str) -> dict:
    result = sagawire("sagas", "list", "--mongodb-url", url, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ids(document: dict) -> list[str]:
    return [row["saga_id"] for row in document["sagas"]]


def test_list_pages_newest_first_with_the_total(url):
    first = listed(url, "--limit", "3")
    second = listed(url, "--limit", "3", "--page", "2")
    third = listed(url, "--limit", "3", "--page", "3")
    assert (first["total"], second["total"], third["total"]) == (7, 7, 7)
    assert ids(first) + ids(second) + ids(third) == [
        "overdue", "waiting", "flagged", "done-0", "done-1", "done-2", "other",
    ]  # fmt: skip


def test_stuck_finds_the_overdue_and_the_flagged_sagas(url):
    assert sorted(ids(listed(url, "--stuck"))) == ["flagged", "other", "overdue"]
    assert ids(listed(url, "--stuck", "--machine", "order")) == ["overdue", "flagged"]
    # Ten minutes overdue is not stuck when the threshold is an hour; flagged still is.
    assert ids(listed(url, "--stuck", "--stuck-after", "3600", "--machine", "order")) == ["flagged"]


def test_filters_by_status_label_state_and_time(url):
    assert ids(listed(url, "--status", "succeeded")) == ["done-0", "done-1", "done-2"]
    assert ids(listed(url, "--status", "failed", "--status", "compensating"))[:3] == [
        "overdue", "waiting", "flagged",
    ]  # fmt: skip
    assert ids(listed(url, "--label", "DELIVERED", "--limit", "1"))[0] == "done-0"
    assert listed(url, "--label", "DELIVERED")["total"] == 3
    # `state` matches the saga's state or a pending step's (the compensation runs there).
    assert "waiting" in ids(listed(url, "--state", "execute_payment"))
    assert ids(listed(url, "--since", (NOW - dt.timedelta(minutes=1, seconds=30)).isoformat())) == [
        "overdue", "waiting",
    ]  # fmt: skip
    assert ids(listed(url, "--until", "5m", "--machine", "refund")) == ["other"]
    assert listed(url, "--machine", "nothing-like-it") == {
        "total": 0, "page": 1, "limit": 50, "sagas": [],
    }  # fmt: skip


def test_list_prints_a_table_for_people(url):
    result = sagawire("sagas", "list", "--mongodb-url", url, "--stuck", "--machine", "order")
    assert result.exit_code == 0, result.output
    assert "overdue" in result.stdout
    assert "overdue" in result.stdout.split("overdue", 1)[1]  # "10m overdue" in its deadline
    assert "flagged: compensation of execute_payment failed" in result.stdout
    assert "1-2 of 2" in result.stdout


def test_show_gives_status_pending_timeline_and_outbox(url):
    result = sagawire("sagas", "show", "overdue", "--mongodb-url", url)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "saga overdue (order v1)" in text
    assert "status compensating; state prepare_order" in text
    assert "compensate:execute_payment" in text
    assert "payment.refund_payment" in text
    assert "2/5" in text
    assert "overdue)" in text
    assert "out_of_stock" in text
    assert "started" in text
    assert "outbox: empty" in text


def test_show_json_is_the_stored_saga(url):
    result = sagawire("sagas", "show", "flagged", "--mongodb-url", url, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["status"] == "failed"
    assert shown["flagged"].startswith("compensation of execute_payment failed")
    assert [entry["event"] for entry in shown["history"]] == ["started", "out_of_stock"]
    assert isinstance(TypeAdapter(HistoryEntry).validate_python(shown["history"][0]), HistoryEntry)


def test_show_an_unknown_saga_exits_1_and_says_so(url):
    result = sagawire("sagas", "show", "no-such-saga", "--mongodb-url", url)
    assert result.exit_code == 1
    assert "no saga 'no-such-saga'" in result.stderr


def test_an_age_is_written_as_machine_files_write_durations():
    now = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    assert parse_time("1h30m", "--since", now) == now - dt.timedelta(minutes=90)
    assert parse_time("90s", "--since", now) == now - dt.timedelta(seconds=90)
    assert parse_time("2030-01-01T10:00:00", "--since", now) == now - dt.timedelta(hours=2)


def test_a_bad_time_is_a_usage_error(url):
    result = sagawire("sagas", "list", "--mongodb-url", url, "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since 'yesterday'" in result.stderr


def test_an_unreachable_database_is_one_line_without_the_password():
    result = sagawire(
        "sagas", "list", "--mongodb-url", "mongodb://ops:hunter2@127.0.0.1:1/sagawire"
    )
    assert result.exit_code == 1
    assert "cannot reach MongoDB at mongodb://ops:***@127.0.0.1:1/sagawire" in result.stderr
    assert "hunter2" not in result.output


def test_stats_counts_by_machine_and_step_latency_percentiles(url):
    result = sagawire("stats", "--mongodb-url", url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["order"]["sagas"] == {
        "running": 0, "compensating": 2, "succeeded": 3, "compensated": 0, "failed": 1,
        "aborted": 0,
    }  # fmt: skip
    # Steps of 100, 200, 300 ms and 200, 400, 600 ms: nearest-rank percentiles.
    assert report["order"]["step_latency_ms"] == {"p50": 200.0, "p95": 600.0, "p99": 600.0}
    assert report["order"]["steps_sampled"] == 6
    assert report["refund"]["sagas"]["compensating"] == 1
    assert report["refund"]["step_latency_ms"] == {"p50": None, "p95": None, "p99": None}

    only = json.loads(
        sagawire("stats", "--mongodb-url", url, "--machine", "refund", "--json").stdout
    )
    assert list(only) == ["refund"]
    table = sagawire("stats", "--mongodb-url", url)
    assert table.exit_code == 0
    assert "order" in table.stdout
    assert "600" in table.stdout


def test_counts_by_state_and_a_filters_count_agree_with_the_sagas(url):
    """What the gateway's machine stats read besides `stats`: sagas by current state and
    status, and how many match a filter (the stuck ones)."""
    from orchestrator.adapters.mongo import SagaFilter  # noqa: PLC0415 - only this test

    async def read() -> tuple[dict[str, dict[str, int]], int, int]:
        store = await MongoSagaStore.connect(url)
        try:
            by_state = await store.queries.counts_by_state("order")
            stuck = await store.queries.count(SagaFilter(machine="order", stuck_before=NOW))
            every = await store.queries.count(SagaFilter())
        finally:
            await store.close()
        return by_state, stuck, every

    by_state, stuck, every = asyncio.run(read())
    expected: dict[str, dict[str, int]] = {}
    for saga in sagas():
        if saga.machine == "order":
            per = expected.setdefault(saga.state, {})
            per[saga.status.value] = per.get(saga.status.value, 0) + 1
    assert by_state == expected
    assert stuck == len(ids(listed(url, "--stuck", "--stuck-after", "0", "--machine", "order")))
    assert (stuck, every) == (2, 7)
