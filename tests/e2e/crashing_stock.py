"""The example stock service (examples/python-participant) that SIGKILLs itself once, at one
point of its first `prepare_order`, as a crash would:

    python tests/e2e/crashing_stock.py after-effect        # reserved, reply not stored yet
    python tests/e2e/crashing_stock.py after-reply-stored  # reply stored, not sent, not acked
    python tests/e2e/crashing_stock.py none                # the service as it is
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Any

from participants_sdk import StoredReply
from participants_sdk.mongo_dedupe import MongoDedupeStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-participant"
POINTS = ("after-effect", "after-reply-stored", "none")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("stock_service", EXAMPLE / "stock_service.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE / 'stock_service.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


def crash() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    point = sys.argv[1] if len(sys.argv) > 1 else "none"
    if point not in POINTS:
        raise SystemExit(f"crash point must be one of {', '.join(POINTS)}, got {point!r}")
    example = load_example()
    if point == "after-effect":
        reserve = example.reserve

        async def reserve_then_crash(*args: Any) -> bool:
            await reserve(*args)
            crash()
            return True

        example.reserve = reserve_then_crash
    elif point == "after-reply-stored":
        put = MongoDedupeStore.put

        async def put_then_crash(self: MongoDedupeStore, key: str, reply: StoredReply) -> None:
            await put(self, key, reply)
            if ":prepare_order:" in key:
                crash()

        MongoDedupeStore.put = put_then_crash  # type: ignore[method-assign]
    asyncio.run(example.main())


if __name__ == "__main__":
    main()
