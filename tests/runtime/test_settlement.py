"""How a delivery is settled when telling its saga raised: one table for the retry and the settling.

No servers: a control request on a stand-in delivery, told to a stand-in `tell`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.core.machines import MachineRegistry, UnknownMachine
from orchestrator.core.messages import TimerFired
from orchestrator.core.pauses import MachinePause, MachinePaused
from orchestrator.errors import RuntimeStopped, SagawireError, StoreRefused
from orchestrator.runtime.actor import UnknownSaga
from orchestrator.runtime.codec import InvalidMessage
from orchestrator.runtime.deliveries import NOT_RETRIED, REQUEUE, Deliveries
from orchestrator.runtime.stats import RuntimeStats
from orchestrator.runtime.system import ActorSystem, RuntimeSettings
from participants_sdk import protocol
from participants_sdk.memory import MemoryBroker

PAUSE = MachinePause("order", by="ops", at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


@dataclasses.dataclass
class _Delivery:
    message: protocol.WireMessage
    queue: str = protocol.CONTROL_QUEUE
    redelivered: bool = False
    settled: str | None = None

    async def ack(self) -> None:
        self.settled = "ack"

    async def requeue(self) -> None:
        self.settled = "requeue"

    async def dead_letter(self, reason: str) -> None:
        self.settled = f"dead_letter {reason.split(':', maxsplit=1)[0]}"

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        raise AssertionError("the runtime never delays a delivery")


def _abort() -> _Delivery:
    return _Delivery(
        protocol.WireMessage.json(type="abort", payload={"saga_id": "s-1", "operator": "ops"})
    )


def test_each_error_has_one_row_that_is_reachable() -> None:
    errors = [error for error, _ in NOT_RETRIED]
    assert all(issubclass(error, SagawireError) for error in errors)
    for i, error in enumerate(errors):
        assert not any(issubclass(error, earlier) for earlier in errors[:i]), error


ERRORS = [
    InvalidMessage("no"),
    UnknownSaga("s-1"),
    UnknownMachine("no machine 'order'"),
    MachinePaused(PAUSE),
    StoreRefused("key with $"),
    RuntimeStopped("stopped"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [*ERRORS, ConnectionError("store down")], ids=repr)
async def test_the_table_says_which_errors_a_runtime_does_not_try_again(
    error: Exception,
) -> None:
    settings = RuntimeSettings(transient_give_up=0.1)
    broker = MemoryBroker().connect()
    system = ActorSystem(MachineRegistry([]), MemorySagaStore(), broker, settings=settings)
    calls = []

    async def tell(saga_id: str, message: object) -> None:
        calls.append(saga_id)
        raise error

    system.tell = tell  # type: ignore[method-assign]
    with pytest.raises(type(error)):
        await system._tell_patiently("s-1", TimerFired())
    assert len(calls) == (3 if isinstance(error, ConnectionError) else 1)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "settled"),
    [
        (InvalidMessage("no"), "dead_letter invalid_message"),
        (UnknownSaga("s-1"), "dead_letter unknown_saga"),
        (UnknownMachine("no machine 'order'"), "dead_letter unknown_machine"),
        (MachinePaused(PAUSE), "dead_letter refused"),
        (StoreRefused("key with $"), "dead_letter unstorable"),
        (RuntimeStopped("stopped"), "requeue"),
        (ConnectionError("store down"), "requeue"),  # retried while it lasted, then given back
    ],
)
async def test_an_error_settles_the_delivery_as_the_table_says(
    error: Exception, settled: str
) -> None:
    async def tell(saga_id: str, message: object) -> None:
        raise error

    stats = RuntimeStats()
    delivery = _abort()
    await Deliveries(tell, stats).on_control(delivery)
    assert delivery.settled == settled
    kind = next((kind for cls, kind in NOT_RETRIED if isinstance(error, cls)), None)
    # A control request comes from no service: its dead letters are counted under service "".
    assert dict(stats.dead_lettered) == ({} if kind is REQUEUE else {(kind, ""): 1})
    assert stats.requeued == (0 if isinstance(error, SagawireError) else 1)
    assert stats.requeued_stopping == (1 if isinstance(error, RuntimeStopped) else 0)
