"""Storing the rows a worker finishes together, a transaction for all that are ready.

Each row of a distributed run is stored with its calls and spans in one
transaction (`store_rows_once`). Rows that end while a commit is under way
wait for the next one and go in together. One transaction per row would
make the rows in flight queue on the locks of the rollup rows that every
call adds to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from trunkline.store.database import Store
from trunkline.store.runs import RowWithRecords, store_rows_once


@dataclass
class _Waiting:
    item: RowWithRecords
    stored: asyncio.Future[bool]


class RowCommits:
    """Stores rows for the tasks of one event loop; `store` returns once the row is committed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[_Waiting] = []
        self._committing: asyncio.Task[None] | None = None

    async def store_row(self, item: RowWithRecords) -> bool:
        """Store `item` unless its row is already ok; return whether it was written."""
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, stored))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_while_waiting())
        return await stored

    async def _commit_while_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                written = await asyncio.to_thread(store_rows_once, self.store, [entry.item for entry in batch])
            except Exception as error:  # every row of the batch fails with it, and is sent again
                for entry in batch:
                    if not entry.stored.done():
                        entry.stored.set_exception(error)
                continue
            for entry, was_written in zip(batch, written, strict=True):
                if not entry.stored.done():
                    entry.stored.set_result(was_written)
