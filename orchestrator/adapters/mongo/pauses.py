"""Paused machines in the `machine_pauses` collection: `{_id: machine, by, reason, at}`."""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.collection import AsyncCollection

from orchestrator.adapters.mongo.documents import Document, store_errors
from orchestrator.core.pauses import MachinePause


async def pause(
    pauses: AsyncCollection[Document], machine: str, *, by: str, reason: str | None
) -> None:
    record = {"by": by, "reason": reason, "at": dt.datetime.now(dt.UTC)}
    with store_errors("pause machine", machine):
        await pauses.replace_one({"_id": machine}, record, upsert=True)


async def resume(pauses: AsyncCollection[Document], machine: str) -> bool:
    with store_errors("resume machine", machine):
        result = await pauses.delete_one({"_id": machine})
    return result.deleted_count > 0


async def paused(pauses: AsyncCollection[Document]) -> dict[str, MachinePause]:
    with store_errors("read paused machines"):
        documents = [document async for document in pauses.find({})]
    return {
        str(d["_id"]): MachinePause(str(d["_id"]), str(d["by"]), d["at"], d.get("reason"))
        for d in documents
    }
