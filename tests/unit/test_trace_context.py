"""W3C trace context: from a start request, kept with the saga, onto every command it sends.

The runtime suite (tests/runtime/test_trace_propagation.py) runs the same way over the brokers.
"""

from __future__ import annotations

import re

import pytest
from decide_support import ORDER, ORDER_DATA, machine, run
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.messages import StartSaga
from orchestrator.runtime.codec import command_message, parse_control
from participants_sdk import MemoryBroker, SagaClient, protocol
from participants_sdk.headers import valid_traceparent

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
VERSION_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@pytest.mark.parametrize(
    "value",
    [
        VALID,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        # A later version may carry more fields after the four of version 00.
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-whatever",
    ],
)
def test_a_valid_traceparent_is_kept_as_it_is(value):
    assert valid_traceparent(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        VALID.upper(),  # upper-case hexadecimal is not allowed
        VALID + "-extra",  # version 00 has exactly four fields
        "ff" + VALID[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent id
        " " + VALID,
        VALID + "\n",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + "x" * 600,
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # bytes: not passed on
        1,
        None,
    ],
)
def test_anything_else_is_left_out(value):
    assert valid_traceparent(value) is None


@given(st.one_of(st.text(max_size=80), st.from_regex(VERSION_00, fullmatch=True)))
def test_whatever_a_client_sends_is_kept_only_if_it_is_a_traceparent(value):
    kept = valid_traceparent(value)
    assert kept in (None, value)
    if kept is not None and value.startswith("00-"):
        assert VERSION_00.fullmatch(value)
        assert value[3:35] != "0" * 32
        assert value[36:52] != "0" * 16


def start_request(headers: dict[str, object]) -> protocol.WireMessage:
    return protocol.WireMessage.json(
        type="start",
        payload={"machine": "order", "saga_id": "o-1", "data": ORDER_DATA},
        correlation_id="o-1",
        headers=headers,
    )


def test_a_start_request_brings_its_traceparent_to_the_saga_and_its_commands():
    _, start, _ = parse_control(start_request({protocol.H_TRACEPARENT: VALID}))
    assert isinstance(start, StartSaga)
    assert start.traceparent == VALID
    decision = run(machine(ORDER), None, start)
    assert decision.saga.traceparent == VALID
    [command] = decision.commands
    message = command_message(command, traceparent=decision.saga.traceparent)
    assert message.headers[protocol.H_TRACEPARENT] == VALID


@pytest.mark.parametrize("header", ["not-a-trace", 42, b"\xff"])
def test_a_start_with_an_invalid_traceparent_starts_the_saga_without_one(header):
    _, start, _ = parse_control(start_request({protocol.H_TRACEPARENT: header}))
    assert isinstance(start, StartSaga)
    assert start.traceparent is None
    decision = run(machine(ORDER), None, start)
    assert decision.saga.traceparent is None
    [command] = decision.commands
    assert protocol.H_TRACEPARENT not in command_message(command).headers


@pytest.mark.asyncio
async def test_the_saga_client_sends_the_traceparent_and_refuses_an_invalid_one():
    broker = MemoryBroker()
    connection = broker.connect()
    await connection.declare_topology([])
    client = SagaClient(connection)
    await client.start_saga("order", {}, saga_id="o-1", traceparent=VALID)
    with pytest.raises(ValueError, match="not a W3C traceparent"):
        await client.start_saga("order", {}, saga_id="o-2", traceparent="00-abc")
    [sent] = broker.messages(protocol.CONTROL_QUEUE)
    assert sent.headers == {protocol.H_TRACEPARENT: VALID}
    assert sent.correlation_id == "o-1"
