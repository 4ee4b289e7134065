"""Dynamic batching: concurrent requests share one inference call.

Requests put their texts on an asyncio queue; one worker takes everything queued (up to ``max_batch_size``
texts, optionally waiting ``max_wait_s`` for more), runs the model once in a thread, and hands each request
its rows. While one batch runs, the next one fills up, so under load batches grow without any added wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[int]]]


class Overloaded(Exception):
    """The queue is full; the client should retry later (429)."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[tuple[np.ndarray, list[int]]] = field(repr=False)


class Batcher:
    """Runs ``encode(texts) -> (vectors, token counts)`` on batches of queued requests, one at a time."""

    def __init__(
        self,
        encode: EncodeFn,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._encode = encode
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None
        self._inflight: list[_Job] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for inference."""
        return self._queue.qsize() + (self._carry is not None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stop the worker; requests in inference or still queued get an error."""
        jobs = [*self._inflight, *([self._carry] if self._carry else [])]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Embed ``texts`` in the next batch: (vectors as the model returns them, tokens per text)."""
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        if self.queued >= self._max_queue:
            raise Overloaded(f"{self.queued} requests are waiting for inference; retry later")
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, size = [first], len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while size < self._max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(job.texts) > self._max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            size += len(job.texts)
        return [job for job in jobs if not job.future.done()]  # a client that went away is skipped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            texts = [text for job in jobs for text in job.texts]
            if self._on_batch is not None:
                self._on_batch(len(texts))
            self._inflight = jobs
            try:
                vectors, tokens = await loop.run_in_executor(self._executor, self._encode, texts)
            except Exception as e:  # the model failed: every request of the batch gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            finally:
                self._inflight = []
            start = 0
            for job in jobs:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result((vectors[start:end], tokens[start:end]))
                start = end
