"""What the flow monitor draws, worked out from stored records without I/O: a saga's path on
its machine's diagram, and the dead-letter queues that belong to a machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from orchestrator.core.definition import COMPENSATE
from orchestrator.core.saga import HistoryEntry, Saga, SagaStatus
from participants_sdk import protocol

START_NODE = "start"
"""The node `core.diagram.dot()` draws the machine's entry as."""


@dataclasses.dataclass(frozen=True)
class PathEdge:
    source: str
    target: str
    label: str | None
    """The transition's label on the diagram when the history tells it (the reply event, or
    "timed out"); None when it does not (the start, a choice, an operator's abort)."""


@dataclasses.dataclass(frozen=True)
class SagaPath:
    visited: list[str]
    """Every node the saga reached, in the order it first reached them; `compensate` once it
    began compensating."""
    edges: list[PathEdge]
    """The transitions it took, each once, named by the diagram's node names."""
    current: str | None
    """The node it is at now; None once it finished."""
    complete: bool
    """False when older history was dropped: edges before it are missing (`visited` still
    holds every state with a visit count)."""


class _Walk:
    """The history read entry by entry: the nodes reached and the transitions between them."""

    def __init__(self, *, from_start: bool) -> None:
        self.visited: list[str] = []
        self.edges: list[PathEdge] = []
        self.previous = START_NODE if from_start else None
        self.because: str | None = None
        """What moves the saga on next: the label of the transition it takes."""
        self.by_operator = False
        """An operator's abort moves the saga on next: along no transition of the machine."""

    def read(self, entry: HistoryEntry) -> None:
        if entry.event == "entered" and entry.state is not None:
            self.reach(entry.state)
        elif entry.event == "compensating":
            self.reach(COMPENSATE)
        elif entry.event == "replied" and entry.detail:
            self.because = entry.detail.removesuffix(" (rejected)")
        elif entry.event == "timed_out":
            self.because = "timed out"
        elif entry.event == "abort_requested":
            self.by_operator = True

    def reach(self, node: str) -> None:
        if node not in self.visited:
            self.visited.append(node)
        if self.previous is not None and self.previous != node and not self.by_operator:
            label = None if self.previous == START_NODE else self.because
            edge = PathEdge(self.previous, node, label)
            if edge not in self.edges:
                self.edges.append(edge)
        self.previous, self.because, self.by_operator = node, None, False


def saga_path(saga: Saga) -> SagaPath:
    """The saga's way through its machine, from its history (`entered`, `compensating` and the
    replies and timeouts before them) and its visit counts."""
    complete = saga.history_dropped == 0
    walk = _Walk(from_start=complete)
    for entry in saga.history:
        walk.read(entry)
    # Task and parallel states count their visits: older ones survive a dropped history.
    visited = walk.visited + [state for state in saga.visits if state not in walk.visited]
    if saga.state not in visited:
        visited.append(saga.state)
    current: str | None = None
    if saga.status is SagaStatus.COMPENSATING:
        current = COMPENSATE
    elif not saga.status.finished:
        current = saga.state
    return SagaPath(visited=visited, edges=walk.edges, current=current, complete=complete)


def machine_dead_letter_queues(services: Iterable[str]) -> list[str]:
    """The DLQs of a machine's services: each one's commands, then its replies, by service."""
    queues = []
    for service in sorted(set(services)):
        queues.append(protocol.dead_letter_queue(protocol.command_queue(service)))
        queues.append(protocol.dead_letter_queue(protocol.reply_queue(service)))
    return queues
