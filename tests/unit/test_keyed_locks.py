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


async def test_holders_of_overlapping_key_sets_take_turns_and_never_deadlock():
    locks = KeyedLocks()
    holding: dict[str, str] = {}
    clashes: list[str] = []

    async def hold(name: str, keys: list[str]) -> None:
        async with locks.hold_all(keys):
            for key in set(keys):
                if key in holding:
                    clashes.append(f"{name} and {holding[key]} on {key}")
                holding[key] = name
            await asyncio.sleep(0)
            for key in set(keys):
                del holding[key]

    sets = [["a", "b"], ["b", "a"], ["c", "a", "a"], ["b", "c"], ["c"]] * 4
    async with asyncio.timeout(5):  # a circle of waiters would never end
        await asyncio.gather(*(hold(f"writer-{n}", keys) for n, keys in enumerate(sets)))

    assert clashes == []
    assert len(locks) == 0
