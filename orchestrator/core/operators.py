"""What an operator's request does to a saga: abort (with or without compensating), retry the
pending steps as new attempts, resume a compensation that gave up. Part of `decide()`."""

from __future__ import annotations

from orchestrator.core.messages import Disposition, OperatorRequest
from orchestrator.core.saga import RECENT_REQUESTS_LIMIT, SagaStatus
from orchestrator.core.steps import Transitions

Verdict = tuple[Disposition, str | None]
"""How a message was taken, and why when it was not applied."""


def on_operator(run: Transitions, request: OperatorRequest) -> Verdict:
    saga = run.saga
    if request.request_id in saga.recent_requests:
        return Disposition.DUPLICATE, f"request {request.request_id!r} was applied already"
    if request.action == "abort":
        verdict = _abort(run, request)
    elif request.action == "retry":
        verdict = _retry(run, request)
    else:
        verdict = _resume(run, request)
    if verdict[0] is Disposition.APPLIED:
        saga.recent_requests = [*saga.recent_requests, request.request_id][-RECENT_REQUESTS_LIMIT:]
    return verdict


def _abort(run: Transitions, request: OperatorRequest) -> Verdict:
    saga = run.saga
    if saga.status.finished:
        return Disposition.REFUSED, f"saga is {saga.status.value} already"
    why = f"aborted by {request.operator}" + (f": {request.reason}" if request.reason else "")
    run.record(
        "abort_requested",
        detail=why + (" (compensate)" if request.compensate else ""),
        by=request.operator,
    )
    if not request.compensate:
        run.finish(SagaStatus.ABORTED)
        return Disposition.APPLIED, None
    if saga.status is SagaStatus.COMPENSATING:
        return Disposition.REFUSED, "saga is compensating already"
    run.begin_compensation(why, "aborted")
    return Disposition.APPLIED, None


def _retry(run: Transitions, request: OperatorRequest) -> Verdict:
    saga = run.saga
    if saga.status.finished:
        hint = "; use resume for a failed compensation" if saga.flagged else ""
        return Disposition.REFUSED, f"saga is {saga.status.value}{hint}"
    if not saga.pending:
        return Disposition.REFUSED, "no step is pending"
    for pending in saga.pending:
        _, retry = run.policy(pending)
        pending.attempt += 1
        pending.max_attempts = pending.attempt - 1 + retry.attempts
        run.record(
            "retry_requested",
            step=pending.step,
            attempt=pending.attempt,
            detail=request.reason,
            by=request.operator,
        )
        run.send(pending)
    return Disposition.APPLIED, None


def _resume(run: Transitions, request: OperatorRequest) -> Verdict:
    saga = run.saga
    compensation = saga.compensation
    if saga.status is not SagaStatus.FAILED or compensation is None or not compensation.remaining:
        return Disposition.REFUSED, (
            "nothing to resume: resume continues a compensation that gave up "
            f"(the saga is {saga.status.value})"
        )
    run.record("resume_requested", detail=request.reason, by=request.operator)
    saga.status = SagaStatus.COMPENSATING
    saga.flagged = None
    saga.finished_at = None
    run.next_compensation(attempt=compensation.last_attempt + 1)
    return Disposition.APPLIED, None
