"""Group commit for the ledger: concurrent appends share one transaction.

Every append waiting while a batch is being written joins the next one, so under load
one transaction, one fsync and one checkpoint signature acknowledge many records. The
writes run on one dedicated thread; the event loop only queues and wakes callers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from consent.errors import LedgerError, StorageUnavailableError
from consent.ledger import AcceptedRecord, Ledger
from consent.models import Receipt

__all__ = ["AppendBatcher"]

log = logging.getLogger("moodfed.consent")

_Result = Receipt | LedgerError


class AppendBatcher:
    """Groups concurrent appends into one ledger transaction (group commit)."""

    def __init__(
        self, ledger: Ledger, *, max_batch: int, on_append: Callable[[], None] | None = None
    ) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.on_append = on_append  # called (non-blocking) after a batch signed a checkpoint
        self.queue: asyncio.Queue[tuple[AcceptedRecord, asyncio.Future[_Result]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self.task: asyncio.Task[None] | None = None

    async def append(self, accepted: AcceptedRecord) -> Receipt:
        """Append one record with whoever else is waiting; raise the ledger's refusal."""
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((accepted, future))
        result = await future
        if isinstance(result, LedgerError):
            raise result
        return result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            records = [accepted for accepted, _ in batch]
            results: list[_Result]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.ledger.append_batch, records
                )
            except LedgerError as exc:
                if not isinstance(exc, StorageUnavailableError):  # that one is logged already
                    log.error("appending a batch of %d records failed: %s", len(batch), exc)
                results = [exc] * len(batch)
            except Exception:
                log.exception("appending a batch of %d records failed", len(batch))
                failure = StorageUnavailableError(
                    "the ledger could not store the record; retry later"
                )
                results = [failure] * len(batch)
            if self.on_append is not None and any(isinstance(r, Receipt) for r in results):
                self.on_append()
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)
