"""The store as the end-to-end tests poll it: how many sagas finished, where the others stand,
each saga as stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from e2e_processes import wait_until

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.core.saga import Saga, SagaStatus

FINISHED = ("succeeded", "compensated", "failed", "aborted")


async def finished_count(store: MongoSagaStore) -> tuple[int, dict[str, int]]:
    """(finished sagas of the order machine, its sagas by status), as `sagawire stats` counts."""
    counts = (await store.queries.counts_by_machine()).get("order")
    counts = counts or {status.value: 0 for status in SagaStatus}
    return sum(counts[status] for status in FINISHED), counts


async def wait_finished(
    store: MongoSagaStore,
    total: int,
    *,
    timeout: float,  # noqa: ASYNC109
    diagnose: Callable[[], str] = str,
    at_least: int | None = None,
    interval: float = 1.0,
) -> dict[str, int]:
    """Poll the store until `at_least` (default: all `total`) sagas reached an outcome."""
    wanted = total if at_least is None else at_least
    last: dict[str, int] = {}

    async def done() -> dict[str, int] | None:
        nonlocal last
        finished, last = await finished_count(store)
        return last if finished >= wanted else None

    try:
        return await wait_until(
            done,
            timeout=timeout,
            interval=interval,  # a count scans every saga on FerretDB: not too often
            what=f"{wanted} of {total} sagas finished",
            diagnose=lambda: f"store counts: {last}\n{diagnose()}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe_unfinished(store)}") from None


async def describe_unfinished(store: MongoSagaStore, limit: int = 5) -> str:
    """Where the first few unfinished sagas stand: state, pending steps, last history."""
    cursor = store.database["sagas"].find(
        {"status": {"$in": ["running", "compensating"]}}, {"status": 1, "version": 1}
    )
    listed = {document["_id"]: document async for document in cursor}
    lines = [f"unfinished sagas (as the store's saga documents say): {len(listed)}"]
    for saga_id, document in list(listed.items())[:limit]:
        # On FerretDB `load` reads the newest version claim, which may be ahead of the saga
        # document that `finished_count` reads (and repairs that document).
        saga = await store.load(saga_id)
        if saga is None:
            continue
        lines.append(
            f"  {saga_id}: saga document {document.get('status')} v{document.get('version')}; "
            "loaded:"
        )
        pending = [
            (step.step, step.attempt, step.waiting, step.deadline.isoformat())
            for step in saga.pending
        ]
        history = [(h.at.time().isoformat(), h.event, h.step, h.attempt) for h in saga.history]
        lines.append(
            f"    {saga.status.value} in {saga.state} v{saga.version}, deadline "
            f"{saga.deadline}, outbox {len(saga.outbox)}, pending {pending}, "
            f"history {history[-6:]}"
        )
    return "\n".join(lines)


async def load_sagas(store: MongoSagaStore, saga_ids: Iterable[str]) -> dict[str, Saga | None]:
    """Each saga as stored (`load` reads the newest version, also on FerretDB)."""
    ids = list(saga_ids)
    limit = asyncio.Semaphore(20)

    async def load(saga_id: str) -> Saga | None:
        async with limit:
            return await store.load(saga_id)

    return dict(zip(ids, await asyncio.gather(*(load(i) for i in ids)), strict=True))
