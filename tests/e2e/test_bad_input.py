"""End to end: bad input is dead-lettered with its reason, a broken handler is retried, then
dead-lettered, and the step it never answered times out and is compensated.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from chaos_support import Run, finish, plan, sized
from e2e_broker import client_broker, publish_raw, read_queue, start_orders
from e2e_outcomes import PLAN, check_outcomes, order_ids
from e2e_processes import E2E_MACHINES, start_shop, wait_until
from e2e_store import wait_finished

from orchestrator.adapters.rabbitmq import dead_letters
from participants_sdk import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


def reply_headers(**changes: object) -> dict[str, object]:
    """The headers of a payment reply to a saga's first payment attempt; `None` drops one."""
    headers: dict[str, object] = {
        protocol.H_MACHINE: "order",
        protocol.H_VERSION: 1,
        protocol.H_STEP: "execute_payment",
        protocol.H_VISIT: 1,
        protocol.H_ATTEMPT: 1,
        protocol.H_IDEMPOTENCY_KEY: "ghost:execute_payment:1",
        protocol.H_SERVICE: "payment",
        **changes,
    }
    return {name: value for name, value in headers.items() if value is not None}


def healthy_ids(prefix: str, count: int) -> list[str]:
    """Order ids the fault plan lets through every service."""
    return [i for i in order_ids(prefix, count * 10) if PLAN.failure_for(i) is None][:count]


NESTED = b"[" * 100_000 + b"]" * 100_000
INVALID = "invalid_message: "
GOOD = b'{"payment_id": "pay-1"}'
REPLY = {"type": "payment_executed", "correlation_id": "ghost"}
VICTIM = {"correlation_id": "victim"}

Expected = dict[str, tuple[str, str]]
"""message id -> (queue it must be dead-lettered from, words its reason must start with)"""


async def send_bad_replies(url: str, expected: Expected) -> None:
    """Thirteen bad replies on the payment reply queue."""
    queue = protocol.reply_queue("payment")

    async def bad(reason: str, body: bytes = GOOD, **changes) -> None:
        props = {**REPLY, "headers": reply_headers(**changes.pop("headers", {})), **changes}
        message_id = await publish_raw(url, protocol.REPLIES_EXCHANGE, "payment", body, **props)
        expected[message_id] = (queue, reason)

    await bad(INVALID + "body is not valid JSON", b'{"payment_id": ')
    await bad("unknown_saga: no saga with id 'ghost'")
    oversize = json.dumps(
        {"payment_id": "pay-1", "pad": "x" * (protocol.MAX_BODY_BYTES + 1)}
    ).encode()
    await bad(INVALID + f"body of {len(oversize)} bytes exceeds the limit", oversize)
    await bad(
        INVALID + f"header {protocol.H_ATTEMPT} must be an integer or a decimal string, got 'abc'",
        headers={protocol.H_ATTEMPT: "abc"},
    )
    await bad(INVALID + f"header {protocol.H_STEP} is missing", headers={protocol.H_STEP: None})
    await bad(INVALID + "content type 'text/plain'", content_type="text/plain")
    await bad(INVALID + "body is not valid UTF-8", b'{"payment_id": "\xff\xfe"}')
    await bad(INVALID + "body is JSON nested too deeply", NESTED)
    await bad(INVALID + "body must be a JSON object, got list", b'["pay-1"]')
    await bad(INVALID + "type (the event name) is missing", type="")
    await bad(INVALID + "correlation_id (the saga id) is missing", correlation_id=None)
    await bad("invalid: ", headers={protocol.H_STEP: "teleport"}, **VICTIM)
    await bad("invalid: ", headers={protocol.H_MACHINE: "refund_flow"}, **VICTIM)


async def send_bad_control(url: str, expected: Expected) -> None:
    """Six bad control requests."""

    async def bad(reason: str, verb: str, body: dict | bytes) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message_id = await publish_raw(
            url,
            protocol.CONTROL_EXCHANGE,
            protocol.CONTROL_ROUTING_KEY,
            raw,
            type=verb,
            correlation_id="x",
        )
        expected[message_id] = (protocol.CONTROL_QUEUE, reason)

    await bad("unknown_machine:", "start", {"machine": "no_such_machine", "saga_id": "stray-1"})
    await bad(INVALID + "unknown control verb 'explode'", "explode", {"saga_id": "stray-2"})
    await bad(INVALID + "invalid start request: machine", "start", {"saga_id": "stray-3"})
    await bad(INVALID + "invalid retry request", "retry", {"saga_id": "victim"})
    await bad("unknown_saga:", "abort", {"saga_id": "stray-4", "operator": "ops"})
    await bad("refused: ", "resume", {"saga_id": "victim", "operator": "ops"})


async def dead_letter_problems(url: str, expected: Expected) -> list[str]:
    """What is not in its DLQ with the reason expected, once they all arrived (or 30 s)."""
    letters = {}
    connection = await dead_letters.connect(url)
    try:
        for queue in sorted({q for q, _ in expected.values()}):
            want = sum(1 for q, _ in expected.values() if q == queue)

            async def arrived(queue: str = queue, want: int = want) -> list | None:
                got = await dead_letters.browse(
                    connection, protocol.dead_letter_queue(queue), limit=None
                )
                return got if len(got) >= want else None

            async def seen(queue: str = queue) -> str:
                got = await dead_letters.browse(
                    connection, protocol.dead_letter_queue(queue), limit=None
                )
                return "\n".join(f"{g.message_id}: {g.reason}" for g in got)

            for letter in await wait_until(
                arrived, timeout=30, what=f"{want} in {queue}.dlq", diagnose=lambda: ""
            ):
                letters[letter.message_id] = (queue, letter)
    finally:
        await connection.close()
    problems = []
    for message_id, (queue, reason) in expected.items():
        if message_id not in letters:
            problems.append(f"{message_id} ({reason}) not in {queue}.dlq")
            continue
        got_queue, letter = letters[message_id]
        if got_queue != queue or not letter.reason.startswith(reason):
            problems.append(f"{message_id} in {got_queue}.dlq with reason {letter.reason!r}")
        if letter.from_queue != queue:
            problems.append(f"{message_id}: dead-letter queue header says {letter.from_queue}")
    return problems


IGNORED = (
    'sagawire_messages_total{disposition="stale"}',
    'sagawire_messages_total{disposition="duplicate"}',
)


def ignored(metrics: dict[str, float]) -> float:
    return sum(metrics.get(key, 0) for key in IGNORED)


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_bad_input_is_dead_lettered_with_its_reason(
    clean_broker, database, processes, report
):
    """Twenty kinds of bad input while a load of healthy sagas runs."""
    mongodb_url, store = database
    (daemon,), services = await start_shop(processes, mongodb_url)
    url = processes.amqp_url
    count = sized(200, 40)
    ids = order_ids("steady", count)
    run = Run(processes, store, services, plan([*ids, "victim"]), report)
    async with client_broker(url) as broker:
        await start_orders(broker, ["victim"])  # a saga the bad replies below aim at
    await wait_finished(store, 1, timeout=30, diagnose=processes.tails)
    load = processes.load("steady", count, sized(40, 20))

    expected: Expected = {}
    await send_bad_replies(url, expected)
    await send_bad_control(url, expected)
    # A reply to a step of the victim that is no longer pending: acked, counted as ignored.
    ignored_before = ignored(await daemon.metrics())
    await publish_raw(
        url, protocol.REPLIES_EXCHANGE, "payment", GOOD, headers=reply_headers(), **REPLY | VICTIM
    )

    problems = await dead_letter_problems(url, expected)
    assert not problems, "\n".join(problems) + "\n" + daemon.tail()

    async def ignored_counted() -> bool:
        return ignored(await daemon.metrics()) > ignored_before

    await wait_until(ignored_counted, timeout=10, what="the late reply counted as ignored")
    await load.summary(timeout=120)
    metrics = await daemon.metrics()
    counted: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith("sagawire_dead_lettered_total{"):
            kind = key.split('kind="', 1)[1].split('"', 1)[0]  # by kind, whatever the service
            counted[kind] = counted.get(kind, 0.0) + value
    assert sum(counted.values()) == len(expected), counted
    assert daemon.alive, daemon.tail()
    await finish(
        run,
        "bad_input",
        [],
        {"kinds": len(expected) + 1, "dead_lettered_by_kind": counted, "late_reply_ignored": 1},
    )


def log_time(record: dict) -> float:
    return dt.datetime.fromisoformat(record["timestamp"]).timestamp()


@pytest.mark.timeout(120)
async def test_broken_handler_is_retried_dead_lettered_and_its_step_times_out(
    clean_broker, database, processes, report
):
    mongodb_url, store = database
    (_daemon,), services = await start_shop(
        processes,
        mongodb_url,
        machines=E2E_MACHINES,  # deliver_order: 2 attempts of 3 s, 1 s apart
        failure_rate=0.0,
        broken={"delivery": ["deliver_order"]},
    )
    ids = order_ids("broken", 1)
    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, ids)

    await wait_finished(store, 1, timeout=30, diagnose=processes.tails)
    # The step timed out (no reply ever came), and both done steps were compensated, once.
    sagas = await check_outcomes(
        store,
        processes,
        {"payment": services["payment"], "stock": services["stock"]},
        {ids[0]: "delivery"},
    )
    saga = sagas[ids[0]]
    assert saga is not None
    events = [(h.event, h.step, h.attempt) for h in saga.history]
    assert ("timed_out", "deliver_order", 2) in events, events

    # Each attempt of deliver_order is retried by the participant, then dead-lettered.
    delivery = services["delivery"]
    letters = await read_queue(
        processes.amqp_url,
        protocol.dead_letter_queue(protocol.command_queue("delivery")),
        expect=2,
        timeout=40,
    )
    assert len(letters) == 2, f"{letters}\n{delivery.tail()}"
    for letter in letters:
        assert letter.type == "deliver_order"
        assert letter.reason.startswith("handler failed 6 times: RuntimeError: "), letter.reason
        assert letter.headers.get(protocol.H_RETRIES) == 5, letter.headers
    assert sorted(letter.headers.get(protocol.H_ATTEMPT) for letter in letters) == [1, 2]

    # With growing delays between the tries: from the participant's log.
    delivery.stop()
    assert delivery.read_ledger()["applied"] == {}
    for letter in letters:
        retries = [
            r
            for r in delivery.log_events("command retry scheduled")
            if r.get("message_id") == letter.message_id
        ]
        dead = [
            r
            for r in delivery.log_events("command dead-lettered")
            if r.get("message_id") == letter.message_id
        ]
        delays = [r["delay"] for r in retries]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0], delays
        times = [log_time(r) for r in [*retries, *dead]]
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
        assert len(gaps) == 5, gaps
        assert all(b > a for a, b in itertools.pairwise(gaps)), gaps
        assert all(gap >= 0.9 * delay for gap, delay in zip(gaps, delays, strict=True)), gaps
        report(
            f"deliver_order attempt {letter.headers.get(protocol.H_ATTEMPT)}: delays {delays}, "
            f"seen {gaps} s apart, then dead-lettered"
        )
