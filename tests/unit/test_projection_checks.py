"""ProjectionChecks: one check per saga after its last save, the newest version, failures logged."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.adapters.mongo.ferretdb import ProjectionChecks

pytestmark = pytest.mark.asyncio


class Recorded:
    def __init__(self, fail_for: str | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_for = fail_for
        self.called = asyncio.Condition()

    async def __call__(self, saga_id: str, version: int) -> None:
        self.calls.append((saga_id, version))
        async with self.called:
            self.called.notify_all()
        if saga_id == self.fail_for:
            raise RuntimeError("server gone")

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5), self.called:
            await self.called.wait_for(lambda: len(self.calls) >= count)


async def test_saves_before_the_check_is_due_make_one_check_of_the_newest_version() -> None:
    check = Recorded()
    checks = ProjectionChecks(check, delay=0.05)
    for version in (2, 3, 4):
        checks.add("s-1", version)
    checks.add("s-2", 7)
    await check.wait_for(2)
    await asyncio.sleep(0.1)  # longer than the delay: no third check comes
    assert check.calls == [("s-1", 4), ("s-2", 7)]
    await checks.close()


async def test_a_save_after_the_check_gets_a_check_of_its_own() -> None:
    check = Recorded()
    checks = ProjectionChecks(check, delay=0.02)
    checks.add("s-1", 2)
    await check.wait_for(1)
    checks.add("s-1", 3)
    await check.wait_for(2)
    assert check.calls == [("s-1", 2), ("s-1", 3)]
    await checks.close()


async def test_a_failed_check_does_not_stop_the_others() -> None:
    check = Recorded(fail_for="bad")
    checks = ProjectionChecks(check, delay=0.02)
    checks.add("bad", 2)
    checks.add("good", 5)
    await check.wait_for(2)
    assert check.calls == [("bad", 2), ("good", 5)]
    await checks.close()


async def test_close_drops_the_checks_to_come() -> None:
    check = Recorded()
    checks = ProjectionChecks(check, delay=30)
    checks.add("s-1", 2)
    await checks.close()
    assert len(checks) == 0
    assert check.calls == []


async def test_a_forgotten_saga_is_not_checked_and_a_later_save_is() -> None:
    check = Recorded()
    checks = ProjectionChecks(check, delay=0.02)
    checks.add("s-1", 2)
    checks.add("s-2", 4)
    checks.forget("s-1")
    assert len(checks) == 1
    await check.wait_for(1)
    checks.add("s-1", 3)
    await check.wait_for(2)
    assert check.calls == [("s-2", 4), ("s-1", 3)]
    await checks.close()
