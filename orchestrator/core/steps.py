"""Moving a saga between states: entering states, sending commands, compensating, finishing.

`Transitions` works on a private copy of the saga that `decide()` forked; nothing here is shared
with the caller until the decision is returned.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from orchestrator.core.conditions import ConditionTypeError
from orchestrator.core.definition import (
    COMPENSATE,
    Branch,
    ChoiceState,
    CommandSpec,
    CompensationSpec,
    FinalState,
    MachineDefinition,
    ParallelState,
    RetryPolicy,
    TaskState,
    render_template,
)
from orchestrator.core.paths import MissingPath
from orchestrator.core.saga import (
    COMPENSATION_PREFIX,
    Compensation,
    CompletedStep,
    HistoryEntry,
    OutgoingCommand,
    PendingStep,
    Saga,
    SagaStatus,
)
from participants_sdk.protocol import idempotency_key

# Choice states chain without waiting; a definition that loops through them is refused by
# validation, and this bound keeps a saga from spinning if one slips through.
MAX_IMMEDIATE_HOPS = 64


class Transitions:
    def __init__(self, definition: MachineDefinition, saga: Saga, now: dt.datetime) -> None:
        self.definition = definition
        self.saga = saga
        self.now = now
        self.commands: list[OutgoingCommand] = []

    # -- history --------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        detail: str | None = None,
        by: str = "orchestrator",
    ) -> None:
        self.saga.record(
            HistoryEntry(
                at=self.now,
                event=event,
                state=self.saga.state,
                step=step,
                attempt=attempt,
                detail=detail,
                by=by,
            )
        )

    # -- specs behind steps ---------------------------------------------------------------

    def action_spec(self, step: str) -> TaskState | Branch:
        found = self.definition.step(step)
        if found is None:
            raise KeyError(step)
        return found[1]

    def compensation_spec(self, action_step: str) -> CompensationSpec | None:
        found = self.definition.step(action_step)
        return None if found is None else found[1].compensation

    def policy(self, pending: PendingStep) -> tuple[float, RetryPolicy]:
        if pending.phase == "compensation":
            spec = self.compensation_spec(pending.step.removeprefix(COMPENSATION_PREFIX))
            if spec is None:
                raise KeyError(pending.step)
            return spec.timeout, spec.retry
        action = self.action_spec(pending.step)
        return action.timeout, action.retry

    # -- entering states ------------------------------------------------------------------

    def enter(self, target: str, *, reason: str) -> None:
        for _ in range(MAX_IMMEDIATE_HOPS):
            if target == COMPENSATE:
                self.begin_compensation(reason, "compensated")
                return
            state = self.definition.states[target]
            self.saga.state = target
            if state.label is not None:
                self.saga.label = state.label
            self.record("entered", detail=reason)
            if isinstance(state, FinalState):
                flag = f"reached final state {target!r}" if state.final == "failed" else None
                self.finish(SagaStatus(state.final), flag=flag)
                return
            if isinstance(state, ChoiceState):
                chosen = self._choose(state)
                if chosen is None:
                    return
                target, reason = chosen
                continue
            self.saga.visits[target] = visit = self.saga.visits.get(target, 0) + 1
            if isinstance(state, TaskState):
                self._start_action(target, target, state, visit)
            else:
                self._start_parallel(target, state, visit)
            return
        self.fail(f"more than {MAX_IMMEDIATE_HOPS} choice states in a row; the machine loops")

    def _choose(self, state: ChoiceState) -> tuple[str, str] | None:
        """The target and why; None when a condition could not be answered and the saga failed."""
        for index, rule in enumerate(state.choice):
            try:
                matched = rule.when.evaluate(self.saga.data)
            except ConditionTypeError as exc:
                # Taking the default here would skip the check the rule stands for, silently.
                self.record("condition_failed", detail=f"choice[{index}]: {exc}")
                self.fail(f"choice state {self.saga.state!r}, choice[{index}]: {exc}")
                return None
            if matched:
                return rule.goto, f"choice[{index}] matched"
        return state.default, "no choice matched: default"

    def _start_action(
        self, step: str, state_name: str, spec: TaskState | Branch, visit: int
    ) -> bool:
        try:
            payload = self.render(spec.command)
        except MissingPath as exc:
            self.record("input_missing", step=step, detail=str(exc))
            self.begin_compensation(f"cannot build command for step {step!r}: {exc}", "compensated")
            return False
        self.send(
            self._pending(
                step,
                "action",
                state_name,
                spec.command,
                visit,
                payload,
                max_attempts=spec.retry.attempts,
            )
        )
        return True

    def _start_parallel(self, state_name: str, state: ParallelState, visit: int) -> None:
        self.saga.parallel_failure = None
        for branch_name, branch in state.parallel.items():
            if not self._start_action(f"{state_name}.{branch_name}", state_name, branch, visit):
                return

    def render(self, spec: CommandSpec) -> dict[str, Any]:
        payload = render_template(spec.input, self.saga.data)
        return dict(payload)

    def _pending(
        self,
        step: str,
        phase: Literal["action", "compensation"],
        state_name: str,
        spec: CommandSpec,
        visit: int,
        payload: dict[str, Any],
        *,
        max_attempts: int,
        attempt: int = 1,
    ) -> PendingStep:
        pending = PendingStep(
            step=step,
            phase=phase,
            state=state_name,
            service=spec.service,
            command=spec.name,
            visit=visit,
            attempt=attempt,
            max_attempts=max_attempts,
            waiting="reply",
            sent_at=self.now,
            deadline=self.now,
            payload=payload,
            idempotency_key=idempotency_key(self.saga.saga_id, step, visit),
        )
        self.saga.pending.append(pending)
        return pending

    # -- sending --------------------------------------------------------------------------

    def send(self, pending: PendingStep) -> None:
        timeout, _ = self.policy(pending)
        pending.waiting = "reply"
        pending.sent_at = self.now
        pending.deadline = self.now + dt.timedelta(seconds=timeout)
        compensates = None
        if pending.phase == "compensation":
            compensates = idempotency_key(
                self.saga.saga_id, pending.step.removeprefix(COMPENSATION_PREFIX), pending.visit
            )
        self.commands.append(
            OutgoingCommand(
                message_id=f"{pending.idempotency_key}:{pending.attempt}",
                saga_id=self.saga.saga_id,
                machine=self.saga.machine,
                version=self.saga.machine_version,
                service=pending.service,
                name=pending.command,
                step=pending.step,
                visit=pending.visit,
                attempt=pending.attempt,
                idempotency_key=pending.idempotency_key,
                payload=pending.payload,
                compensates=compensates,
            )
        )
        self.record(
            "command_sent",
            step=pending.step,
            attempt=pending.attempt,
            detail=f"{pending.service}.{pending.command}",
        )

    def retry_or_exhaust(self, pending: PendingStep, why: str) -> bool:
        """After a timeout or a failed compensation attempt: back off and retry, or give up.

        Returns False when the attempts are used up; the caller decides what that means.
        """
        if pending.attempt >= pending.max_attempts:
            return False
        _, retry = self.policy(pending)
        delay = retry.delay_after(pending.attempt)
        self.record(
            "retry_scheduled",
            step=pending.step,
            attempt=pending.attempt,
            detail=f"{why}; attempt {pending.attempt + 1} in {delay:g}s",
        )
        if delay <= 0:
            pending.attempt += 1
            self.send(pending)
        else:
            pending.waiting = "backoff"
            pending.deadline = self.now + dt.timedelta(seconds=delay)
        return True

    def drop_pending(self, pending: PendingStep) -> None:
        self.saga.pending = [p for p in self.saga.pending if p.step != pending.step]

    def complete(self, pending: PendingStep, *, uncertain: bool = False) -> None:
        self.saga.completed.append(
            CompletedStep(
                step=pending.step,
                state=pending.state,
                visit=pending.visit,
                at=self.now,
                uncertain=uncertain,
            )
        )

    # -- compensation ---------------------------------------------------------------------

    def begin_compensation(self, reason: str, outcome: Literal["compensated", "aborted"]) -> None:
        # Commands still in flight may take effect: compensate them as well, first.
        for pending in self.saga.pending:
            if pending.phase == "action" and self.compensation_spec(pending.step) is not None:
                self.complete(pending, uncertain=True)
        self.saga.pending = []
        self.saga.parallel_failure = None
        remaining = [
            step
            for step in reversed(self.saga.completed)
            if self.compensation_spec(step.step) is not None
        ]
        self.saga.status = SagaStatus.COMPENSATING
        self.saga.compensation = Compensation(reason=reason, outcome=outcome, remaining=remaining)
        self.record("compensating", detail=f"{reason}; {len(remaining)} to compensate")
        self.next_compensation()

    def next_compensation(self, *, attempt: int = 1) -> None:
        compensation = self.saga.compensation
        if compensation is None:
            raise RuntimeError("next_compensation outside compensation")
        if not compensation.remaining:
            self.finish(SagaStatus(compensation.outcome))
            return
        target = compensation.remaining[0]
        spec = self.compensation_spec(target.step)
        if spec is None:
            raise KeyError(target.step)
        step = COMPENSATION_PREFIX + target.step
        try:
            payload = self.render(spec)
        except MissingPath as exc:
            self.record("input_missing", step=step, detail=str(exc))
            self.fail(f"cannot build compensation {step!r}: {exc}")
            return
        self.send(
            self._pending(
                step,
                "compensation",
                target.state,
                spec,
                target.visit,
                payload,
                attempt=attempt,
                max_attempts=attempt - 1 + spec.retry.attempts,
            )
        )

    def compensation_replied(self, pending: PendingStep) -> None:
        compensation = self.saga.compensation
        if compensation is None:
            raise RuntimeError("compensation reply outside compensation")
        self.drop_pending(pending)
        action_step = pending.step.removeprefix(COMPENSATION_PREFIX)
        compensation.remaining = [
            c for c in compensation.remaining if c.step != action_step or c.visit != pending.visit
        ]
        compensation.done.append(action_step)
        self.next_compensation()

    # -- endings --------------------------------------------------------------------------

    def finish(self, status: SagaStatus, *, flag: str | None = None) -> None:
        self.saga.status = status
        self.saga.pending = []
        self.saga.parallel_failure = None
        self.saga.flagged = flag
        self.saga.finished_at = self.now
        self.record("finished", detail=status.value if flag is None else f"{status.value}: {flag}")

    def fail(self, reason: str) -> None:
        """Neither finished nor rolled back: mark failed and flag for an operator."""
        self.finish(SagaStatus.FAILED, flag=reason)
