"""What an end-to-end run should end with: each saga's outcome from its planned failure, the
idempotency keys each participant applies, and the figures of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from e2e_processes import FAILURE_RATE, SERVICES, ProcessGroup, Service
from e2e_store import load_sagas

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.core.saga import Saga
from orchestrator.demo.participants import FaultPlan

PLAN = FaultPlan(rate=FAILURE_RATE)
SCALE_VARIABLE = "SAGAWIRE_E2E_SCALE"


def scaled(count: int) -> int:
    """`count` sagas times `SAGAWIRE_E2E_SCALE` (default 1: the issue's numbers), at least 30."""
    scale = float(os.environ.get(SCALE_VARIABLE) or 1)
    return max(round(count * scale), 30)


def finish_timeout(count: int) -> float:
    """Seconds allowed for `count` sagas to finish: generous for a slow FerretDB."""
    return 60 + 0.6 * count


def order_ids(prefix: str, count: int) -> list[str]:
    """Deterministic ids: the same fault mix on every run."""
    return [f"{prefix}-{n:04d}" for n in range(count)]


def expected_outcome(failure: str | None) -> str:
    return "succeeded" if failure is None else "compensated"


def expected_keys(saga_id: str, failure: str | None) -> dict[str, set[str]]:
    """The idempotency keys each service applies for a saga that fails at `failure` (or not).

    A service that rejects its step applies nothing and is not compensated; the steps done
    before it are compensated, newest first. A step that timed out (`failure` names its service)
    counts as failed there.
    """
    keys: dict[str, set[str]] = {service: set() for service in SERVICES}
    if failure == "payment":
        return keys
    keys["payment"].add(f"{saga_id}:execute_payment:1")
    if failure is not None:
        keys["payment"].add(f"{saga_id}:compensate:execute_payment:1")
    if failure == "stock":
        return keys
    keys["stock"].add(f"{saga_id}:prepare_order:1")
    if failure is not None:
        keys["stock"].add(f"{saga_id}:compensate:prepare_order:1")
        return keys
    keys["delivery"].add(f"{saga_id}:deliver_order:1")
    return keys


def outcome_problems(
    sagas: Mapping[str, Saga | None], failures: Mapping[str, str | None]
) -> list[str]:
    problems = []
    for saga_id, failure in failures.items():
        saga = sagas.get(saga_id)
        want = expected_outcome(failure)
        if saga is None:
            problems.append(f"{saga_id}: not in the store (expected {want})")
        elif saga.status.value != want:
            problems.append(
                f"{saga_id}: {saga.status.value} in state {saga.state} "
                f"(expected {want}, fails at {failure}); last history: "
                f"{[(h.event, h.step, h.attempt) for h in saga.history[-4:]]}"
            )
    return problems


def ledger_problems(
    applied: Mapping[str, Mapping[str, int]], failures: Mapping[str, str | None]
) -> list[str]:
    """Every key applied at most once, and exactly the expected ones applied, per service."""
    problems = []
    for service, counts in applied.items():
        problems += [
            f"{service}: {key} applied {n} times" for key, n in sorted(counts.items()) if n > 1
        ]
    expected: dict[str, set[str]] = {service: set() for service in applied}
    for saga_id, failure in failures.items():
        for service, keys in expected_keys(saga_id, failure).items():
            if service in expected:
                expected[service] |= keys
    for service, counts in applied.items():
        missing = sorted(expected[service] - set(counts))
        extra = sorted(set(counts) - expected[service])
        if missing:
            problems.append(f"{service}: {len(missing)} keys never applied, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{service}: {len(extra)} keys applied unexpectedly, e.g. {extra[:5]}")
    return problems


def shorten(problems: list[str], limit: int = 15) -> str:
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n".join(problems[:limit]) + more


async def check_outcomes(
    store: MongoSagaStore,
    processes: ProcessGroup,
    services: Mapping[str, Service],
    failures: Mapping[str, str | None],
) -> dict[str, Saga | None]:
    """Every saga has the outcome its failure says, and each participant applied exactly the
    expected idempotency keys, each once. The services are stopped first: their ledgers are then
    final (written at exit)."""
    sagas = await load_sagas(store, failures)
    problems = outcome_problems(sagas, failures)
    for service in services.values():
        service.stop()
    applied = {name: service.read_ledger()["applied"] for name, service in services.items()}
    problems += ledger_problems(applied, failures)
    assert not problems, f"{shorten(problems)}\n{processes.tails()}"
    return sagas


def run_figures(
    sagas: Mapping[str, Saga | None], began: float, commands: float
) -> tuple[float, float, int]:
    """(seconds from the first start to the last finish, steps per second, saga versions)."""
    finished = [s.finished_at.timestamp() for s in sagas.values() if s and s.finished_at]
    wall = max(finished) - began
    versions = sum(s.version for s in sagas.values() if s)
    return wall, commands / wall, versions


def timed_out_steps(sagas: Mapping[str, Saga | None]) -> int:
    """How many step attempts timed out (and were retried or compensated), over all sagas."""
    return sum(1 for s in sagas.values() if s for h in s.history if h.event == "timed_out")
