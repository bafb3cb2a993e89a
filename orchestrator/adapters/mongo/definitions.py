"""Immutable snapshots of machine definitions in the `machines` collection (invariant 6).

One document per machine version, written once, never changed:

    {_id: "order:v1", machine, version, hash, definition, source, first_loaded_at}

`definition` is `MachineDefinition.snapshot()`; `hash` its `content_hash()`. These functions let
driver errors through; `MongoSagaStore` turns them into `StoreError`.
"""

from __future__ import annotations

import datetime as dt

from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from orchestrator.adapters.mongo.documents import Document
from orchestrator.core.conditions import STORED_SNAPSHOT
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import MachineRegistry
from orchestrator.errors import DefinitionChanged, DefinitionError


def snapshot_id(name: str, version: int) -> str:
    return f"{name}:v{version}"


async def register_definitions(
    machines: AsyncCollection[Document], registry: MachineRegistry, now: dt.datetime
) -> None:
    """Store a snapshot of every definition version not stored yet.

    `DefinitionChanged` lists every definition whose content differs from the snapshot stored
    under the same version (the new ones are stored all the same).
    """
    problems = [
        problem
        for definition in registry
        if (problem := await _register(machines, definition, registry.source(*definition.key), now))
    ]
    if problems:
        raise DefinitionChanged(problems)


async def _register(
    machines: AsyncCollection[Document],
    definition: MachineDefinition,
    source: str,
    now: dt.datetime,
) -> str | None:
    """Insert the snapshot if absent; the problem line when a different one is stored."""
    name, version = definition.key
    new_hash = definition.content_hash()
    try:
        await machines.insert_one(
            {
                "_id": snapshot_id(name, version),
                "machine": name,
                "version": version,
                "hash": new_hash,
                "definition": definition.snapshot(),
                "source": source,
                "first_loaded_at": now,
            }
        )
    except DuplicateKeyError:
        stored = await machines.find_one({"_id": snapshot_id(name, version)}, {"hash": 1})
    else:
        return None
    old_hash = "" if stored is None else str(stored.get("hash", ""))
    if old_hash == new_hash:
        return None
    return (
        f"{source}: machine '{name}' v{version} changed since it was first loaded "
        f"(stored hash {old_hash[:12]}, now {new_hash[:12]}); running sagas depend on it: "
        "give the change a new version"
    )


async def stored_definitions(machines: AsyncCollection[Document]) -> list[MachineDefinition]:
    """Every stored snapshot, by machine and version, also versions no longer in the files."""
    cursor = machines.find({}, {"definition": 1}).sort([("machine", 1), ("version", 1)])
    found, problems = [], []
    async for document in cursor:
        try:
            found.append(
                MachineDefinition.model_validate(
                    document["definition"], context={STORED_SNAPSHOT: True}
                )
            )
        except ValidationError as exc:
            problems.append(f"stored machine snapshot {document['_id']!r} no longer loads: {exc}")
    if problems:
        raise DefinitionError(problems)
    return found
