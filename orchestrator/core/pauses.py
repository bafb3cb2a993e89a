"""Paused machines: while a machine is paused its new sagas are refused; running ones go on."""

from __future__ import annotations

import dataclasses
import datetime as dt

from orchestrator.errors import SagawireError


@dataclasses.dataclass(frozen=True)
class MachinePause:
    machine: str
    by: str
    at: dt.datetime
    reason: str | None = None

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return (
            f"machine {self.machine!r} is paused (by {self.by} at "
            f"{self.at.strftime('%Y-%m-%d %H:%M:%S')} UTC{why}); "
            f"`sagawire machines resume {self.machine}` lets new sagas start again"
        )


class MachinePaused(SagawireError):
    def __init__(self, pause: MachinePause) -> None:
        self.pause = pause
        super().__init__(pause.describe())
