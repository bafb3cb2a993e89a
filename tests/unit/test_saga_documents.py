"""Saga documents: the layout the MongoDB store writes, in both forms of the history."""

from __future__ import annotations

import datetime as dt

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.adapters.mongo.documents import (
    PACKED_CODEC,
    from_document,
    history_of,
    to_document,
)
from orchestrator.core.saga import HistoryEntry, Saga

NOW = dt.datetime(2026, 12, 4, 12, 0, 0, 123000, tzinfo=dt.UTC)


def saga() -> Saga:
    made = Saga(
        saga_id="s-1",
        machine="order",
        machine_version=1,
        state="pay",
        data={"kept": None, "nested": {"also": None}},
        created_at=NOW,
        updated_at=NOW,
    )
    made.history.append(HistoryEntry(at=NOW, event="started", state="pay"))
    made.history.append(
        HistoryEntry(at=NOW, event="command_sent", state="pay", step="pay", attempt=1)
    )
    return made


@pytest.mark.parametrize("packed", [False, True])
def test_a_document_read_back_is_the_saga_written(packed: bool) -> None:
    document = to_document(saga(), packed_history=packed)
    # As the driver hands it back: encoded and decoded, times in UTC.
    stored = bson.decode(bson.encode(document), PACKED_CODEC)

    assert from_document(stored) == saga()
    assert isinstance(stored["history"], bytes) is packed


def test_none_fields_are_left_out_but_none_in_the_data_is_kept() -> None:
    document = to_document(saga())

    assert "label" not in document
    assert "deadline" not in document
    assert "step" not in document["history"][0]
    assert document["data"] == {"kept": None, "nested": {"also": None}}


def test_history_of_reads_both_layouts_and_none() -> None:
    packed = to_document(saga(), packed_history=True)["history"]
    plain = to_document(saga())["history"]

    assert history_of(packed) == history_of(plain) == plain
    assert history_of(None) == []


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text().filter(lambda key: "\x00" not in key), inner, max_size=4)
    ),
    max_leaves=20,
)
EVENTS = st.builds(
    HistoryEntry,
    at=st.datetimes(
        min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
        max_value=dt.datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(dt.UTC),
    ).map(lambda at: at.replace(microsecond=at.microsecond // 1000 * 1000)),
    event=st.sampled_from(["started", "entered", "command_sent", "replied", "finished"]),
    state=st.none() | st.text(max_size=8),
    step=st.none() | st.text(max_size=8),
    attempt=st.none() | st.integers(min_value=1, max_value=50),
    detail=st.none() | st.text(max_size=20),
)


@given(
    data=st.dictionaries(st.text().filter(lambda key: "\x00" not in key), JSON_VALUES, max_size=5),
    history=st.lists(EVENTS, max_size=8),
    label=st.none() | st.text(max_size=8),
    packed=st.booleans(),
)
def test_any_saga_reads_back_as_written_in_either_layout(
    data: dict[str, object], history: list[HistoryEntry], label: str | None, packed: bool
) -> None:
    written = saga()
    written.data = data
    written.history = history
    written.label = label

    document = to_document(written, packed_history=packed)
    stored = bson.decode(bson.encode(document), PACKED_CODEC)

    assert from_document(stored) == written
