"""The store's versioned save alone: saves per second against a real MongoDB-protocol server.

    python -m bench.store URL --sagas 200 --saves 3000

Starts order sagas with the engine's own `decide()` (so each document is what the daemon
writes) and inserts them, untimed; then saves each of them four times, `--in-flight` saves at
a time, and times that. Prints JSON. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.core.decide import decide
from orchestrator.core.machines import load_machines
from orchestrator.core.messages import StartSaga
from orchestrator.core.saga import Saga
from orchestrator.demo.participants import example_order

ORDER = Path(__file__).resolve().parents[1] / "machines" / "order.yaml"
SAVES_PER_SAGA = 4
"""As the order saga's life: three replies and the outbox mark's save, after its insert."""


async def run(url: str, in_flight: int, saves: int) -> dict[str, float]:
    definition = next(iter(load_machines(ORDER)))
    database = f"sagawire_bench_{uuid.uuid4().hex[:8]}"
    store = await MongoSagaStore.connect(url, database)
    try:
        await store.ensure_indexes()
        now = dt.datetime.now(dt.UTC)
        started = []
        for n in range(max(saves // SAVES_PER_SAGA, 1)):  # inserts are not timed
            saga_id = f"bench-{n:05d}"
            message = StartSaga(saga_id=saga_id, machine="order", data=example_order(saga_id))
            started.append(await store.insert(decide(definition, None, message, now).saga))
        limit = asyncio.Semaphore(in_flight)
        began = time.monotonic()

        async def live(saga: Saga) -> None:
            for _ in range(SAVES_PER_SAGA):
                async with limit:
                    saga = await store.save(saga)

        await asyncio.gather(*(live(saga) for saga in started))
        elapsed = time.monotonic() - began
        await store.flush()
    finally:
        await store.client.drop_database(database)
        await store.close()
    done = len(started) * SAVES_PER_SAGA
    return {"saves": done, "seconds": elapsed, "per_s": done / elapsed, "in_flight": in_flight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--saves", type=int, default=3000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.in_flight, args.saves))), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
