"""`decide()`: the whole behaviour of a saga as one pure function.

    decide(definition, saga, message, now) -> Decision(saga, commands, disposition)

The input saga is never modified; a message that changes nothing returns it as it was, so a
duplicate, a stale reply or an early timer fire is harmless by construction. The runtime stores
the returned saga (with the new commands in its outbox) and then publishes the commands.
"""

from __future__ import annotations

import datetime as dt

from orchestrator.core.definition import COMPENSATE, MachineDefinition, ParallelState, TaskState
from orchestrator.core.messages import (
    Decision,
    Disposition,
    Message,
    StartSaga,
    StepReply,
    TimerFired,
)
from orchestrator.core.operators import Verdict, on_operator
from orchestrator.core.paths import DataPath
from orchestrator.core.saga import (
    COMPENSATION_PREFIX,
    PendingStep,
    Saga,
    copy_json,
    start_digest,
)
from orchestrator.core.steps import Transitions
from participants_sdk.headers import bounded
from participants_sdk.limits import MAX_DATA_BYTES, json_size, unstorable


def decide(
    definition: MachineDefinition, saga: Saga | None, message: Message, now: dt.datetime
) -> Decision:
    if isinstance(message, StartSaga):
        if saga is not None:
            return _start_again(saga, message)
        return _start(definition, message, now)
    if saga is None:
        raise ValueError(f"{type(message).__name__} needs an existing saga")
    if (saga.machine, saga.machine_version) != definition.key:
        raise ValueError(
            f"saga {saga.saga_id!r} runs {saga.machine} v{saga.machine_version}, "
            f"not {definition.machine} v{definition.version}"
        )
    run = Transitions(definition, saga.fork(), now)
    if isinstance(message, StepReply):
        verdict = _on_reply(run, message)
    elif isinstance(message, TimerFired):
        verdict = _on_timer(run)
    else:
        verdict = on_operator(run, message)
    disposition, reason = verdict
    if disposition not in (Disposition.APPLIED, Disposition.UNEXPECTED, Disposition.UNSTORABLE):
        return Decision(saga, [], disposition, reason)
    return _decision(run, disposition, reason)


def _decision(run: Transitions, disposition: Disposition, reason: str | None) -> Decision:
    saga = run.saga
    saga.updated_at = run.now
    saga.refresh_deadline()
    # Commands not yet confirmed when the saga was loaded stay in the outbox with the new ones.
    saga.outbox = [*saga.outbox, *run.commands]
    return Decision(saga, run.commands, disposition, reason)


def _start_again(saga: Saga, message: StartSaga) -> Decision:
    """A start for a saga id that exists: a repeat changes nothing; other data is refused."""
    if saga.machine == message.machine and saga.start_digest in (
        None,  # started before digests were kept: nothing to compare with
        start_digest(message.machine, message.data),
    ):
        return Decision(saga, [], Disposition.DUPLICATE, f"saga {saga.saga_id!r} exists")
    what = "machine" if saga.machine != message.machine else "data"
    return Decision(
        saga,
        [],
        Disposition.REFUSED,
        f"saga {saga.saga_id!r} exists with other {what}: it was started as {saga.machine} "
        f"v{saga.machine_version} on {saga.created_at.isoformat()}; "
        "start a new saga under a new id",
    )


def _start(definition: MachineDefinition, message: StartSaga, now: dt.datetime) -> Decision:
    saga = Saga(
        start_digest=start_digest(message.machine, message.data),
        saga_id=message.saga_id,
        machine=definition.machine,
        machine_version=definition.version,
        state=definition.initial,
        data=copy_json(message.data),
        traceparent=message.traceparent,
        created_at=now,
        updated_at=now,
    )
    run = Transitions(definition, saga.fork(), now)
    run.record("started", detail=f"{definition.machine} v{definition.version}")
    run.enter(definition.initial, reason="start")
    return _decision(run, Disposition.APPLIED, None)


# -- replies ------------------------------------------------------------------------------


def _on_reply(run: Transitions, reply: StepReply) -> Verdict:
    saga = run.saga
    if (invalid := _misaddressed(run, reply)) is not None:
        return Disposition.INVALID, invalid
    pending = saga.pending_step(reply.step)
    # Every attempt of a visit carries the same idempotency key and so reports the same one
    # effect: the first reply of the current visit is applied, whichever attempt it names.
    if pending is None or pending.visit != reply.visit or reply.attempt > pending.attempt:
        return _not_pending(saga, reply, pending)
    if pending.phase == "compensation":
        return _compensation_reply(run, pending, reply)
    found = run.definition.step(reply.step)
    if found is None:  # pragma: no cover - _misaddressed checked it
        raise KeyError(reply.step)
    state_name, _ = found
    state = run.definition.states[state_name]
    if isinstance(state, TaskState):
        return _task_reply(run, state, pending, reply)
    if isinstance(state, ParallelState):
        return _branch_reply(run, state, pending, reply)
    raise TypeError(state)  # pragma: no cover - step() returns tasks and branches only


def _misaddressed(run: Transitions, reply: StepReply) -> str | None:
    """Why the reply cannot be for this saga: another machine, no such step, or a service that
    does not own the step (invariant 10); None when it can."""
    saga = run.saga
    if reply.machine is not None and reply.machine != saga.machine:
        return (
            f"reply names machine {reply.machine!r}, "
            f"but saga {saga.saga_id!r} runs {saga.machine!r}"
        )
    owner = _owner(run.definition, reply.step)
    if owner is None:
        return f"machine {saga.machine} v{saga.machine_version} has no step {reply.step!r}"
    if reply.service is not None and reply.service != owner:
        return (
            f"reply to step {reply.step!r} comes from service {reply.service!r}, "
            f"but service {owner!r} owns it"
        )
    return None


def _owner(definition: MachineDefinition, step: str) -> str | None:
    """The service a step's command (or compensation) is sent to; None for no such step."""
    found = definition.step(step.removeprefix(COMPENSATION_PREFIX))
    if found is None:
        return None
    if not step.startswith(COMPENSATION_PREFIX):
        return found[1].command.service
    compensation = found[1].compensation
    return None if compensation is None else compensation.service


def _not_pending(saga: Saga, reply: StepReply, pending: PendingStep | None) -> Verdict:
    where = f"step {reply.step!r} visit {reply.visit} attempt {reply.attempt}"
    if pending is not None and (reply.visit, reply.attempt) > (pending.visit, pending.attempt):
        return Disposition.INVALID, (
            f"reply for {where}, but visit {pending.visit} attempt {pending.attempt} "
            "is the newest sent"
        )
    if pending is not None and reply.visit < pending.visit:
        return Disposition.STALE, f"reply for {where}; visit {pending.visit} is current"
    if reply.step.startswith(COMPENSATION_PREFIX):
        action = reply.step.removeprefix(COMPENSATION_PREFIX)
        if saga.compensation is not None and action in saga.compensation.done:
            return Disposition.DUPLICATE, f"compensation {where} was applied already"
    elif any(c.step == reply.step and c.visit == reply.visit for c in saga.completed) or (
        f"{reply.step}:{reply.visit}" in saga.rejected
    ):
        return Disposition.DUPLICATE, f"{where} was applied already"
    if saga.status.finished:
        return Disposition.STALE, f"reply for {where}; the saga is {saga.status.value}"
    return Disposition.STALE, f"reply for {where}, which is not pending"


def _take_reply(
    run: Transitions, pending: PendingStep, reply: StepReply, *, handled: bool
) -> Verdict | None:
    """Record the reply and stop waiting for the step; a verdict only if it is unexpected.

    A rejected reply is taken even when the state does not name its event: a business failure
    the machine did not foresee still means the step did nothing.
    """
    run.record(
        "replied",
        step=reply.step,
        attempt=reply.attempt,
        detail=reply.event + (" (rejected)" if reply.rejected else ""),
    )
    if not handled and not reply.rejected:
        return _unexpected(run, reply)
    run.drop_pending(pending)
    if reply.rejected:
        run.saga.rejected.append(f"{reply.step}:{reply.visit}")
    return None


def _task_reply(
    run: Transitions, state: TaskState, pending: PendingStep, reply: StepReply
) -> Verdict:
    transition = state.on.get(reply.event)
    if (unhandled := _take_reply(run, pending, reply, handled=transition is not None)) is not None:
        return unhandled
    if transition is None:
        run.begin_compensation(f"step {reply.step!r} failed: {reply.event}", "compensated")
        return Disposition.APPLIED, None
    if not reply.rejected:
        run.complete(pending)
    if transition.save_path is not None and (
        refused := _save_reply(run, transition.save_path, reply)
    ):
        run.begin_compensation(refused, "compensated")
        return Disposition.UNSTORABLE, refused
    reason = f"{reply.event} from {reply.step}"
    if transition.goto == COMPENSATE:
        run.begin_compensation(f"step {reply.step!r} replied {reply.event}", "compensated")
    else:
        run.enter(transition.goto, reason=reason)
    return Disposition.APPLIED, None


def _branch_reply(
    run: Transitions, state: ParallelState, pending: PendingStep, reply: StepReply
) -> Verdict:
    branch = state.parallel[reply.step.partition(".")[2]]
    result = branch.on.get(reply.event)
    if (unhandled := _take_reply(run, pending, reply, handled=result is not None)) is not None:
        return unhandled
    refused = None
    if result is not None and result.result == "done" and not reply.rejected:
        run.complete(pending)
        if result.save_path is not None and (refused := _save_reply(run, result.save_path, reply)):
            run.saga.parallel_failure = run.saga.parallel_failure or refused
    elif run.saga.parallel_failure is None:
        run.saga.parallel_failure = f"branch {reply.step!r} replied {reply.event}"
    _join(run, state)
    return (Disposition.UNSTORABLE, refused) if refused else (Disposition.APPLIED, None)


def _save_reply(run: Transitions, path: DataPath, reply: StepReply) -> str | None:
    """Keep the reply body in saga data; the reason instead when the store could not hold it
    (invariant 12): the step took effect all the same, so the caller compensates."""
    problem = unstorable(reply.payload, path="body")
    if problem is None:
        size = json_size(reply.payload) + json_size(run.saga.data)
        if size > MAX_DATA_BYTES:
            problem = f"saga data would grow to about {size} bytes, past {MAX_DATA_BYTES}"
    if problem is None:
        path.assign(run.saga.data, reply.payload)
        return None
    reason = bounded(f"reply {reply.event!r} of step {reply.step!r} cannot be stored: {problem}")
    run.record("reply_refused", step=reply.step, attempt=reply.attempt, detail=reason)
    return reason


def _join(run: Transitions, state: ParallelState) -> None:
    """When every branch has settled, leave the parallel state one way or the other."""
    if any(p.state == run.saga.state and p.phase == "action" for p in run.saga.pending):
        return
    failure = run.saga.parallel_failure
    if failure is None:
        run.enter(state.then, reason="all branches done")
    elif state.on_failure == COMPENSATE:
        run.begin_compensation(failure, "compensated")
    else:
        run.saga.parallel_failure = None
        run.enter(state.on_failure, reason=failure)


def _unexpected(run: Transitions, reply: StepReply) -> Verdict:
    run.saga.unexpected_events += 1
    reason = f"event {reply.event!r} is not expected in state {run.saga.state!r}"
    run.record("unexpected_event", step=reply.step, attempt=reply.attempt, detail=reason)
    return Disposition.UNEXPECTED, reason


def _compensation_reply(run: Transitions, pending: PendingStep, reply: StepReply) -> Verdict:
    if reply.rejected and (pending.waiting == "backoff" or reply.attempt < pending.attempt):
        # This attempt has failed already (a timeout, or this very rejection redelivered): a
        # failure counts once against the compensation's attempts.
        return Disposition.DUPLICATE, (
            f"attempt {reply.attempt} of {reply.step!r} has failed already; "
            f"attempt {pending.attempt} is "
            + ("scheduled" if pending.waiting == "backoff" else "sent")
        )
    run.record(
        "compensation_replied",
        step=reply.step,
        attempt=reply.attempt,
        detail=reply.event + (" (rejected)" if reply.rejected else ""),
    )
    if reply.rejected:
        _compensation_attempt_failed(run, pending, f"compensation rejected: {reply.event}")
    else:
        run.compensation_replied(pending)
    return Disposition.APPLIED, None


def _compensation_attempt_failed(run: Transitions, pending: PendingStep, why: str) -> None:
    if run.retry_or_exhaust(pending, why):
        return
    if run.saga.compensation is not None:
        run.saga.compensation.last_attempt = pending.attempt
    run.fail(f"compensation {pending.step!r} failed after {pending.attempt} attempts: {why}")


# -- timers -------------------------------------------------------------------------------


def _on_timer(run: Transitions) -> Verdict:
    due = [p for p in run.saga.pending if p.deadline <= run.now]
    if not due:
        return Disposition.STALE, "no deadline is due"
    for pending in due:
        if run.saga.pending_step(pending.step) is not pending:
            continue  # an earlier due step moved the saga on
        if pending.waiting == "backoff":
            pending.attempt += 1
            run.record("retrying", step=pending.step, attempt=pending.attempt)
            run.send(pending)
        elif pending.phase == "compensation":
            _compensation_attempt_failed(run, pending, "timed out")
        else:
            _action_timed_out(run, pending)
    return Disposition.APPLIED, None


def _action_timed_out(run: Transitions, pending: PendingStep) -> None:
    run.record("timed_out", step=pending.step, attempt=pending.attempt)
    if run.retry_or_exhaust(pending, "timed out"):
        return
    why = f"step {pending.step!r} timed out after {pending.attempt} attempts"
    run.drop_pending(pending)
    # No reply means no knowing whether it took effect: compensate it if it can be.
    run.complete(pending, uncertain=True)
    state = run.definition.states[pending.state]
    if isinstance(state, ParallelState):
        if run.saga.parallel_failure is None:
            run.saga.parallel_failure = why
        _join(run, state)
    elif isinstance(state, TaskState):
        if state.on_timeout == COMPENSATE:
            run.begin_compensation(why, "compensated")
        else:
            run.enter(state.on_timeout, reason=why)
