"""The runtime's important log events, with the context they carry (structlog's `capture_logs`).

`capture_logs` stands in for the configured processors while it runs; `merge_contextvars` is
handed back to it so that what the runtime binds per message (saga_id, message_id, type) shows.
The runtime logs no event per saga started or finished: `runtime_stopped` counts the outcomes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from runtime_support import order, serve_shop
from structlog.testing import capture_logs

from orchestrator.testing import SagaHarness, ScriptedService
from participants_sdk import protocol

pytestmark = pytest.mark.asyncio

LogEntries = list[dict[str, Any]]


def captured():
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def named(logs: LogEntries, event: str) -> LogEntries:
    return [entry for entry in logs if entry["event"] == event]


async def test_the_runtime_logs_its_start_and_the_outcomes_it_saw_when_it_stops(
    make_harness: Callable[..., SagaHarness],
) -> None:
    with captured() as logs:
        async with make_harness() as harness:
            plan, _ = await serve_shop(harness)
            plan.failures["o-2"] = "delivery"
            await harness.start("order", order("o-1"), "o-1")
            await harness.start("order", order("o-2"), "o-2")
            await harness.drain()

    (started,) = named(logs, "runtime_started")
    assert started["log_level"] == "info"
    every_service = {service for machine in harness.registry for service in machine.services()}
    assert set(started["services"]) == every_service >= {"delivery", "payment", "stock"}
    assert started["machines"] == len(harness.registry)
    (stopped,) = named(logs, "runtime_stopped")
    assert stopped["log_level"] == "info"
    assert stopped["finished"] == {"succeeded": 1, "compensated": 1}
    assert stopped["dead_lettered"] == {}
    assert stopped["conflicts"] == 0
    assert [e for e in logs if e["log_level"] in {"warning", "error", "critical"}] == []


async def test_a_reply_for_an_unknown_saga_is_dead_lettered_with_its_kind_and_reason(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-1"), "o-1")
    command = await manual["payment"].next_command()
    stray = dataclasses.replace(command, correlation_id="o-nobody")

    with captured() as logs:
        await manual["payment"].reply(stray, "payment_executed", {"payment_id": "p-1"})
        await harness.drain()

    (letter,) = named(logs, "dead_lettered")
    assert letter["log_level"] == "warning"
    assert letter["queue"] == protocol.reply_queue("payment")
    assert letter["kind"] == "unknown_saga"
    assert letter["reason"] == "unknown_saga: no saga with id 'o-nobody'"
    assert letter["message_id"] not in {None, "", command.message_id}
    assert harness.system.stats.dead_lettered == {("unknown_saga", "payment"): 1}


async def test_a_version_conflict_is_logged_in_the_context_of_the_message_it_retries(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-5"), "o-5")
    command = await manual["payment"].next_command()
    # Another writer (an operator tool, another replica) saves the saga behind the actor's back.
    other = await harness.saga("o-5")
    other.data["note"] = "written elsewhere"
    await harness.store.save(other)

    with captured() as logs:
        await manual["payment"].reply(command, "payment_executed", {"payment_id": "p-5"})
        await harness.drain()

    (conflict,) = named(logs, "version_conflict")
    assert conflict["log_level"] == "debug"  # a retry, not a fault: no line at INFO
    assert conflict["saga_id"] == "o-5"
    assert "o-5" in conflict["error"]
    # Bound per message by the runtime, not passed by the actor.
    assert conflict["type"] == "payment_executed"
    assert conflict["message_id"]
    assert conflict["message_id"] != command.message_id
    assert named(logs, "dead_lettered") == []
    assert (await harness.saga("o-5")).state == "prepare_order"
