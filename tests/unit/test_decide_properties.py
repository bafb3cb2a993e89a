"""Property tests of `decide()`: random message sequences driven until the saga is finished.

A run starts a saga and then, for a bounded number of steps, sends what a real deployment may
deliver: replies of the pending steps (success or business failure), timer fires at or after the
saga's deadline, early timer fires, redeliveries of earlier messages, late replies for earlier
attempts, replies for attempts never sent, failing compensations, and operator aborts, retries
and resumes. After that the pending steps are answered with success until the saga finishes.
Every step and the end state are checked against the invariants of the design.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from typing import Any

from decide_support import machine
from hypothesis import event, given, settings
from hypothesis import strategies as st

from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.messages import (
    Decision,
    Disposition,
    Message,
    OperatorRequest,
    StartSaga,
    StepReply,
    TimerFired,
)
from orchestrator.core.saga import COMPENSATION_PREFIX, HISTORY_LIMIT, PendingStep, Saga, SagaStatus

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SAGA_ID = "s-1"
RANDOM_STEPS = 30
FINISHING_STEPS = 60
MAX_OPERATOR_REQUESTS = 6

# Small retry budgets so that runs reach exhausted retries and failed compensations often.
ORDER = """
machine: order
version: 1
initial: pay
states:
  pay:
    command: {service: payment, name: execute_payment, input: {order_id: $.order_id}}
    compensation:
      service: payment
      name: refund_payment
      input: {order_id: $.order_id}
      timeout: 20s
      retry: {attempts: 2, backoff: 1s}
    timeout: 10s
    retry: {attempts: 2, backoff: 2s}
    on:
      payment_executed: {goto: reserve, save_as: payment}
      payment_failed: compensate
  reserve:
    command: {service: stock, name: reserve_stock, input: {order_id: $.order_id}}
    compensation:
      service: stock
      name: release_stock
      input: {order_id: $.order_id}
      timeout: 20s
      retry: {attempts: 3, backoff: 0s}
    timeout: 10s
    retry: {attempts: 3, backoff: 1s}
    on:
      stock_reserved: ship
      out_of_stock: compensate
  ship:
    command: {service: delivery, name: ship_order, input: {order_id: $.order_id}}
    timeout: 30s
    retry: {attempts: 2, backoff: 5s}
    on:
      shipped: shipped
      delivery_failed: compensate
  shipped: {final: succeeded}
"""

TRIP = """
machine: trip
version: 1
initial: prepare
states:
  prepare:
    command: {service: trips, name: prepare_trip, input: {trip_id: $.order_id}}
    compensation:
      service: trips
      name: discard_trip
      timeout: 20s
      retry: {attempts: 2, backoff: 1s}
    timeout: 10s
    retry: {attempts: 2, backoff: 1s}
    on: {prepared: book, refused: compensate}
  book:
    parallel:
      flight:
        command: {service: flights, name: book_flight}
        compensation:
          service: flights
          name: cancel_flight
          timeout: 20s
          retry: {attempts: 2, backoff: 0s}
        timeout: 10s
        retry: {attempts: 2, backoff: 2s}
        on: {flight_booked: done, no_seats: fail}
      hotel:
        command: {service: hotels, name: book_hotel}
        compensation:
          service: hotels
          name: cancel_hotel
          timeout: 20s
          retry: {attempts: 3, backoff: 1s}
        timeout: 15s
        retry: {attempts: 2, backoff: 1s}
        on: {hotel_booked: done, no_rooms: fail}
      car:
        command: {service: cars, name: rent_car}
        timeout: 10s
        retry: {attempts: 1}
        on: {car_rented: done, no_cars: fail}
    then: confirm
  confirm:
    command: {service: trips, name: confirm_trip}
    timeout: 10s
    retry: {attempts: 2, backoff: 1s}
    on: {confirmed: booked, too_late: compensate}
  booked: {final: succeeded}
"""


@dataclasses.dataclass(frozen=True)
class Machine:
    definition: MachineDefinition
    success: dict[str, str]
    """Action step -> an event that completes it."""
    failure: dict[str, str]
    """Action step -> its business failure event (sent rejected)."""
    fail_result: dict[str, str]
    """Branch step -> an event mapped to `fail` (sent not rejected)."""


ORDER_MACHINE = Machine(
    machine(ORDER),
    success={"pay": "payment_executed", "reserve": "stock_reserved", "ship": "shipped"},
    failure={"pay": "payment_failed", "reserve": "out_of_stock", "ship": "delivery_failed"},
    fail_result={},
)
TRIP_MACHINE = Machine(
    machine(TRIP),
    success={
        "prepare": "prepared",
        "book.flight": "flight_booked",
        "book.hotel": "hotel_booked",
        "book.car": "car_rented",
        "confirm": "confirmed",
    },
    failure={
        "prepare": "refused",
        "book.flight": "no_seats",
        "book.hotel": "no_rooms",
        "book.car": "no_cars",
        "confirm": "too_late",
    },
    fail_result={"book.flight": "no_seats", "book.hotel": "no_rooms", "book.car": "no_cars"},
)

StepVisit = tuple[str, int]


class Run:
    """One saga driven by hypothesis-drawn messages, checking invariants on every decision."""

    def __init__(self, machine: Machine, data: st.DataObject) -> None:
        self.machine = machine
        self.definition = machine.definition
        self.data = data
        self.now = T0
        self.message_ids: set[str] = set()
        self.keys: dict[StepVisit, str] = {}
        # Messages that may be delivered again and must then change nothing.
        self.redeliverable: list[Message] = []
        self.replied: set[tuple[str, int, int]] = set()
        self.compensations_applied: list[StepVisit] = []
        self.compensations_started: list[StepVisit] = []
        self.operator_requests = 0
        # An operator aborted without compensating: what was left stays undone.
        self.abandoned = False
        self.resumed = False
        decision = decide(
            self.definition,
            None,
            StartSaga(SAGA_ID, self.definition.machine, {"order_id": "o"}),
            self.now,
        )
        assert decision.disposition is Disposition.APPLIED
        self.saga: Saga = decision.saga
        self._check_decision(None, decision)

    # -- the checks made on every decision ------------------------------------------------

    def send(self, message: Message) -> Decision:
        before = self.saga
        snapshot = before.model_dump()
        decision = decide(self.definition, before, message, self.now)
        assert before.model_dump() == snapshot, "decide() mutated the saga it was given"
        if not decision.changed:
            assert decision.saga is before, decision.disposition
            assert decision.commands == []
        self._check_decision(before, decision)
        if (
            isinstance(message, StepReply)
            and message.step.startswith(COMPENSATION_PREFIX)
            and decision.disposition is Disposition.APPLIED
            and not message.rejected
        ):
            self.compensations_applied.append(
                (message.step.removeprefix(COMPENSATION_PREFIX), message.visit)
            )
        self.saga = decision.saga
        return decision

    def _check_decision(self, before: Saga | None, decision: Decision) -> None:
        saga = decision.saga
        assert len(saga.history) <= HISTORY_LIMIT
        assert saga.deadline == min((p.deadline for p in saga.pending), default=None)
        if saga.status.finished:
            assert saga.pending == []
            assert saga.finished_at is not None
        completed_now = {(c.step, c.visit) for c in saga.completed}
        completed_before: set[StepVisit] = set()
        if before is not None:
            completed_before = {(c.step, c.visit) for c in before.completed}
            completed_before |= {(p.step, p.visit) for p in before.pending if p.phase == "action"}
        for command in decision.commands:
            key = f"{SAGA_ID}:{command.step}:{command.visit}"
            assert command.idempotency_key == key
            assert self.keys.setdefault((command.step, command.visit), key) == key
            assert command.message_id == f"{key}:{command.attempt}"
            assert command.message_id not in self.message_ids, command.message_id
            self.message_ids.add(command.message_id)
            if not command.step.startswith(COMPENSATION_PREFIX):
                assert command.compensates is None
                continue
            action = (command.step.removeprefix(COMPENSATION_PREFIX), command.visit)
            # A compensation undoes a step that completed (or was in flight) before it.
            assert action in completed_now, action
            assert action in completed_before, action
            assert command.compensates == f"{SAGA_ID}:{action[0]}:{action[1]}"
            if action not in self.compensations_started:
                self.compensations_started.append(action)

    # -- drawing the next message -----------------------------------------------------------

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def fresh(self, pending: PendingStep) -> bool:
        return (pending.step, pending.visit, pending.attempt) not in self.replied

    def reply_to(self, pending: PendingStep, kind: str, attempt: int | None = None) -> StepReply:
        self.replied.add((pending.step, pending.visit, pending.attempt))
        if pending.phase == "compensation":
            rejected = kind != "ok"
            event = "compensation_failed" if rejected else "compensated"
        elif kind == "ok":
            event, rejected = self.machine.success[pending.step], False
        elif kind == "fail_result":
            event, rejected = self.machine.fail_result[pending.step], False
        else:
            event, rejected = self.machine.failure[pending.step], True
        attempt = pending.attempt if attempt is None else attempt
        return StepReply(pending.step, pending.visit, attempt, event, {}, rejected=rejected)

    def options(self) -> list[tuple[Any, ...]]:
        """What may happen next; repeated entries make an option more likely."""
        saga = self.saga
        found: list[tuple[Any, ...]] = []
        for pending in saga.pending:
            if self.fresh(pending):
                if pending.phase == "compensation":
                    # Compensations fail more often here than in life, to reach their limits.
                    found += [("reply", pending.step, "ok")] + [("reply", pending.step, "fail")] * 2
                else:
                    found += [("reply", pending.step, "ok")] * 3 + [("reply", pending.step, "fail")]
                if pending.step in self.machine.fail_result:
                    found.append(("reply", pending.step, "fail_result"))
            if pending.attempt > 1:
                found.append(("old_attempt", pending.step))
            found.append(("future_attempt", pending.step))
        if saga.deadline is not None:
            found += [("timer",)] * 2
            if self.now < saga.deadline:
                found.append(("early_timer",))
        if self.redeliverable:
            found += [("redeliver",)] * 2
        if self.operator_requests < MAX_OPERATOR_REQUESTS:
            found.append(("operator",))
        return found

    def random_step(self) -> None:
        option = self.draw(st.sampled_from(self.options()))
        kind = option[0]
        if kind == "reply":
            self.now += dt.timedelta(seconds=self.draw(st.integers(0, 3)))
            pending = self.saga.pending_step(option[1])
            assert pending is not None
            message = self.reply_to(pending, option[2])
            if (
                pending.phase == "compensation"
                and message.rejected
                and pending.waiting == "backoff"
            ):
                # The attempt timed out, so it has failed already and a retry is scheduled:
                # its late rejection adds nothing.
                self.redeliver(message)
            else:
                self.deliver(message)
        elif kind == "old_attempt":
            # Every attempt of a visit reports the same one effect: the first reply of the
            # current visit applies, whichever attempt it names.
            pending = self.saga.pending_step(option[1])
            assert pending is not None
            attempt = self.draw(st.integers(1, pending.attempt - 1))
            message = self.reply_to(pending, self.draw(st.sampled_from(["ok", "fail"])), attempt)
            if pending.phase == "compensation" and message.rejected:
                # That attempt failed already (it timed out): its rejection counts once.
                self.redeliver(message)
            else:
                self.deliver(message)
        elif kind == "future_attempt":
            pending = self.saga.pending_step(option[1])
            assert pending is not None
            message = StepReply(
                pending.step,
                pending.visit,
                pending.attempt + self.draw(st.integers(1, 3)),
                "whatever",
                {},
                rejected=self.draw(st.booleans()),
            )
            decision = self.send(message)
            assert decision.disposition is Disposition.INVALID, decision.reason
        elif kind == "timer":
            assert self.saga.deadline is not None
            late = dt.timedelta(seconds=self.draw(st.sampled_from([0, 0, 1, 7, 45])))
            self.now = max(self.now, self.saga.deadline) + late
            assert self.send(TimerFired()).disposition is Disposition.APPLIED
        elif kind == "early_timer":
            before = self.saga
            decision = self.send(TimerFired())
            assert decision.disposition is Disposition.STALE
            assert decision.saga is before
        elif kind == "redeliver":
            self.redeliver(self.draw(st.sampled_from(self.redeliverable)))
        else:
            action, compensate = self.draw(
                st.sampled_from([("retry", False), ("abort", True), ("abort", False)])
            )
            self.operator(OperatorRequest(action, "bob", self.request_id(), compensate=compensate))

    def request_id(self) -> str:
        self.operator_requests += 1
        return f"req-{self.operator_requests}"

    def deliver(self, message: StepReply) -> None:
        decision = self.send(message)
        assert decision.disposition is Disposition.APPLIED, decision.reason
        self.redeliverable.append(message)

    def operator(self, request: OperatorRequest) -> None:
        decision = self.send(request)
        assert decision.disposition in (Disposition.APPLIED, Disposition.REFUSED)
        if decision.disposition is Disposition.APPLIED:
            if request.action == "abort" and not request.compensate:
                self.abandoned = True
            entry = next(h for h in reversed(self.saga.history) if h.by == "bob")
            assert entry.event.endswith("_requested")
            self.redeliverable.append(request)

    def redeliver(self, message: Message) -> None:
        """A message delivered again changes nothing: same saga object, no commands."""
        before = self.saga
        decision = self.send(message)
        assert decision.saga is before, (message, decision.disposition, decision.reason)
        assert decision.commands == []
        assert decision.disposition in (Disposition.DUPLICATE, Disposition.STALE)

    def finishing_step(self) -> None:
        """Answer what is pending with success; fire the timer for steps waiting to retry."""
        for pending in self.saga.pending:
            if pending.waiting == "reply" and self.fresh(pending):
                self.deliver(self.reply_to(pending, "ok"))
                return
        assert self.saga.deadline is not None, "a running saga with nothing to wake it"
        self.now = max(self.now, self.saga.deadline)
        assert self.send(TimerFired()).disposition is Disposition.APPLIED

    def drive(self) -> None:
        for _ in range(RANDOM_STEPS):
            if self.saga.status.finished and not self.maybe_resume():
                break
            self.random_step()
        for _ in range(FINISHING_STEPS):
            if self.saga.status.finished and not self.maybe_resume():
                return
            self.finishing_step()
        raise AssertionError(f"saga did not finish: {self.saga.status} in {self.saga.state}")

    def maybe_resume(self) -> bool:
        saga = self.saga
        resumable = (
            saga.status is SagaStatus.FAILED
            and saga.compensation is not None
            and bool(saga.compensation.remaining)
        )
        if not resumable or self.operator_requests >= MAX_OPERATOR_REQUESTS:
            return False
        if not self.draw(st.booleans()):
            return False
        request = OperatorRequest("resume", "bob", self.request_id())
        decision = self.send(request)
        assert decision.disposition is Disposition.APPLIED, decision.reason
        assert self.saga.status is SagaStatus.COMPENSATING
        (command,) = decision.commands
        assert command.step.startswith(COMPENSATION_PREFIX)
        self.redeliverable.append(request)
        self.resumed = True
        return True

    # -- the checks made at the end ---------------------------------------------------------

    def has_compensation(self, step: str) -> bool:
        found = self.definition.step(step)
        assert found is not None
        return found[1].compensation is not None

    def check_end(self) -> None:
        saga = self.saga
        assert saga.status.finished
        assert saga.pending == []
        assert saga.deadline is None
        compensable = [(c.step, c.visit) for c in saga.completed if self.has_compensation(c.step)]
        reverse_completion = list(reversed(compensable))
        started = self.compensations_started
        # Compensations start one at a time, in reverse order of completion.
        assert started == reverse_completion[: len(started)]
        # No step is compensated twice, and none that did not complete.
        counts = collections.Counter(self.compensations_applied)
        assert all(n == 1 for n in counts.values()), counts
        assert set(self.compensations_applied) <= set(compensable)
        compensation = saga.compensation
        if saga.status is SagaStatus.SUCCEEDED:
            assert compensation is None
            assert started == []
            assert saga.flagged is None
        elif saga.status is SagaStatus.FAILED:
            # These machines fail only when a compensation gives up.
            assert saga.flagged
            assert compensation is not None
            assert compensation.remaining
            done = len(compensation.done)
            assert [(c.step, c.visit) for c in compensation.remaining] == reverse_completion[done:]
        elif not self.abandoned:
            # Ended compensated, or aborted with compensation: every compensable step once.
            assert compensation is not None
            assert compensation.outcome == saga.status.value
            assert self.compensations_applied == reverse_completion
            assert compensation.done == [step for step, _ in reverse_completion]
            assert compensation.remaining == []
            assert saga.flagged is None
        else:
            # Aborted without compensation, possibly in the middle of compensating.
            assert saga.status is SagaStatus.ABORTED
            assert (
                self.compensations_applied == reverse_completion[: len(self.compensations_applied)]
            )

    def check_redeliveries_at_the_end(self) -> None:
        for message in self.redeliverable:
            self.redeliver(message)
        for request in (
            OperatorRequest("abort", "bob", "late-abort"),
            OperatorRequest("abort", "bob", "late-abort-c", compensate=True),
            OperatorRequest("retry", "bob", "late-retry"),
        ):
            before = self.saga
            decision = self.send(request)
            assert decision.disposition is Disposition.REFUSED
            assert decision.saga is before


def _run(machine: Machine, data: st.DataObject) -> None:
    run = Run(machine, data)
    run.drive()
    run.check_end()
    run.check_redeliveries_at_the_end()
    # Shown by `pytest --hypothesis-show-statistics`: what the runs covered.
    event(f"ended {run.saga.status.value}")
    if any(c.uncertain for c in run.saga.completed):
        event("a step timed out for good or was abandoned in flight")
    if run.resumed:
        event("resumed a failed compensation")
    if run.compensations_applied:
        event("compensated at least one step")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_order_saga_invariants(data):
    _run(ORDER_MACHINE, data)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_parallel_saga_invariants(data):
    _run(TRIP_MACHINE, data)
