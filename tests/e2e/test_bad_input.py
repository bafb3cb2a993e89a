"""End to end: bad input is dead-lettered with its reason, a broken handler is retried, then
dead-lettered, and the step it never answered times out and is compensated.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from e2e_support import (
    E2E_MACHINES,
    PLAN,
    check_outcomes,
    client_broker,
    header_text,
    metric_total,
    order_ids,
    publish_raw,
    read_queue,
    start_orders,
    start_shop,
    wait_finished,
)

from participants_sdk import protocol as p

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


def reply_headers(**changes: object) -> dict[str, object]:
    """The headers of a payment reply to a saga's first payment attempt; `None` drops one."""
    headers: dict[str, object] = {
        p.H_MACHINE: "order",
        p.H_VERSION: 1,
        p.H_STEP: "execute_payment",
        p.H_VISIT: 1,
        p.H_ATTEMPT: 1,
        p.H_IDEMPOTENCY_KEY: "ghost:execute_payment:1",
        p.H_SERVICE: "payment",
        **changes,
    }
    return {name: value for name, value in headers.items() if value is not None}


def healthy_ids(prefix: str, count: int) -> list[str]:
    """Order ids the fault plan lets through every service."""
    return [i for i in order_ids(prefix, count * 10) if PLAN.failure_for(i) is None][:count]


@pytest.mark.timeout(120)
async def test_bad_input_is_dead_lettered_with_its_reason(clean_broker, database, processes):
    mongodb_url, store = database
    (daemon,), services = await start_shop(processes, mongodb_url)
    url = processes.amqp_url
    replies, control = p.REPLIES_EXCHANGE, p.CONTROL_EXCHANGE

    # message id -> (queue it must be dead-lettered from, words its reason must start with)
    expected: dict[str, tuple[str, str]] = {}

    async def send(queue: str, reason: str, exchange: str, key: str, body: bytes, **props) -> None:
        expected[await publish_raw(url, exchange, key, body, **props)] = (queue, reason)

    payment_replies = p.reply_queue("payment")
    reply = {"type": "payment_executed", "correlation_id": "ghost"}
    await send(
        payment_replies,
        "invalid_message: body is not valid JSON",
        replies,
        "payment",
        b'{"payment_id": ',
        headers=reply_headers(),
        **reply,
    )
    await send(
        payment_replies,
        "unknown_saga: no saga with id 'ghost'",
        replies,
        "payment",
        b'{"payment_id": "pay-1"}',
        headers=reply_headers(),
        **reply,
    )
    oversize = json.dumps({"payment_id": "pay-1", "pad": "x" * (p.MAX_BODY_BYTES + 1)}).encode()
    await send(
        payment_replies,
        f"invalid_message: body of {len(oversize)} bytes exceeds the limit",
        replies,
        "payment",
        oversize,
        headers=reply_headers(),
        **reply,
    )
    await send(
        payment_replies,
        f"invalid_message: header {p.H_ATTEMPT} must be a positive integer, got 'abc'",
        replies,
        "payment",
        b'{"payment_id": "pay-1"}',
        headers=reply_headers(**{p.H_ATTEMPT: "abc"}),
        **reply,
    )
    await send(
        payment_replies,
        f"invalid_message: header {p.H_STEP} is missing",
        replies,
        "payment",
        b'{"payment_id": "pay-1"}',
        headers=reply_headers(**{p.H_STEP: None}),
        **reply,
    )
    start = {"machine": "no_such_machine", "saga_id": "stray-1", "data": {}}
    await send(
        p.CONTROL_QUEUE,
        "unknown_machine:",
        control,
        p.CONTROL_ROUTING_KEY,
        json.dumps(start).encode(),
        type="start",
        correlation_id="stray-1",
    )
    await send(
        p.CONTROL_QUEUE,
        "invalid_message: unknown control verb 'explode'",
        control,
        p.CONTROL_ROUTING_KEY,
        b'{"saga_id": "stray-2"}',
        type="explode",
        correlation_id="stray-2",
    )

    letters = {}
    for queue in (payment_replies, p.CONTROL_QUEUE):
        want = sum(1 for q, _ in expected.values() if q == queue)
        taken = await read_queue(url, p.dead_letter_queue(queue), expect=want, timeout=30)
        letters.update({letter.message_id: (queue, letter) for letter in taken})
    problems = []
    for message_id, (queue, reason) in expected.items():
        if message_id not in letters:
            problems.append(f"{message_id} ({reason}) not in {queue}.dlq")
            continue
        got_queue, letter = letters[message_id]
        if got_queue != queue or not letter.reason.startswith(reason):
            problems.append(f"{message_id} in {got_queue}.dlq with reason {letter.reason!r}")
        if header_text(letter.headers, p.H_DEAD_LETTER_QUEUE) != queue:
            problems.append(f"{message_id}: dead-letter queue header {letter.headers}")
    assert not problems, "\n".join(problems) + "\n" + daemon.tail()

    # Still serving: a saga started now goes through.
    assert daemon.alive, daemon.tail()
    status, _ = await daemon.get("/readyz")
    assert status == 200
    ids = healthy_ids("after-bad-input", 1)
    async with client_broker(url) as broker:
        await start_orders(broker, ids)
    await wait_finished(store, 1, timeout=30, diagnose=processes.tails)
    await check_outcomes(store, processes, services, {ids[0]: None})

    metrics = await daemon.metrics()
    counted = {
        kind: metrics.get(f'sagawire_dead_lettered_total{{kind="{kind}"}}', 0)
        for kind in ("invalid_message", "unknown_saga", "unknown_machine")
    }
    assert counted == {"invalid_message": 5, "unknown_saga": 1, "unknown_machine": 1}, metrics
    assert metric_total(metrics, "sagawire_dead_lettered_total") == 7


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
        processes.amqp_url, p.dead_letter_queue(p.command_queue("delivery")), expect=2, timeout=40
    )
    assert len(letters) == 2, f"{letters}\n{delivery.tail()}"
    for letter in letters:
        assert letter.type == "deliver_order"
        assert letter.reason.startswith("handler failed 6 times: RuntimeError: "), letter.reason
        assert letter.headers.get(p.H_RETRIES) == 5, letter.headers
    assert sorted(letter.headers.get(p.H_ATTEMPT) for letter in letters) == [1, 2]

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
            f"deliver_order attempt {letter.headers.get(p.H_ATTEMPT)}: delays {delays}, "
            f"seen {gaps} s apart, then dead-lettered"
        )
