"""`KeyedLocks`: exclusion per key, independence across keys, no lock left behind."""

from __future__ import annotations

import asyncio

import pytest

from participants_sdk.keyed_locks import KeyedLocks

pytestmark = pytest.mark.asyncio


async def test_holders_of_one_key_take_turns():
    locks = KeyedLocks()
    inside: list[str] = []
    most = 0

    async def hold(name: str) -> None:
        nonlocal most
        async with locks.hold("saga-1"):
            inside.append(name)
            most = max(most, len(inside))
            await asyncio.sleep(0)  # give the others every chance to enter
            inside.remove(name)

    await asyncio.gather(*(hold(f"writer-{n}") for n in range(5)))

    assert most == 1
    assert len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other():
    locks = KeyedLocks()
    entered = asyncio.Event()

    async with locks.hold("saga-1"):

        async def other() -> None:
            async with locks.hold("saga-2"):
                entered.set()

        await asyncio.wait_for(other(), timeout=1)

    assert entered.is_set()
    assert len(locks) == 0


async def test_the_lock_is_released_and_dropped_when_the_holder_fails():
    locks = KeyedLocks()

    with pytest.raises(RuntimeError, match="write failed"):
        async with locks.hold("saga-1"):
            raise RuntimeError("write failed")

    assert len(locks) == 0
    async with locks.hold("saga-1"):  # not left locked
        assert len(locks) == 1
