"""Dynamic batching: concurrent requests share inference calls, sized by a budget of padded tokens.

A request's texts are cut into chunks (longest first) whose padded size, texts x longest text in tokens,
stays within ``max_batch_tokens``; the chunks wait in arrival order. A worker takes the first chunk and adds
the next ones while the budgets allow (padded tokens, and the share of them that would be padding:
``max_padding``; optionally waiting ``max_wait_s`` for more), runs the model once in a thread, and hands each
chunk its rows. It takes no more than its share of the waiting texts (their number over the workers, rounded
down) and leaves the rest to the next free worker: with a few short requests in flight, two titles then run
side by side on two cores instead of one after the other in one padded call, while under load the share
grows and calls batch up to the budgets.

On CPU a small budget wins: padding a batch to its longest text costs more than the per-call overhead it
saves (one abstract at a time runs about twice as fast per text as 32 padded together), while short texts
still share calls. Several workers, each with its own thread and a single-threaded model call, run chunks
side by side: on a few cores that wastes less CPU than one call spread over all cores, and it splits a long
request across the cores. A batch that has the machine to itself (no other call running, nothing waiting)
and is long enough may go to ``solo_encode`` instead, a model call that uses every core, so a lone abstract
is not held to one core. With ``cpus``, worker thread i runs on ``cpus[i]`` only (Linux): two
single-threaded model calls then never share a core while the other core serves the event loop, and each
keeps its core's caches.

A request waits at most ``max_queue_s``: if none of its chunks has reached the model by then, it leaves the
queue with :class:`QueueTimeout` instead of being served late. :meth:`Batcher.refuse_waiting` empties the
queue the same way when the server stops (:class:`ShuttingDown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

EncodeFn = Callable[[list[str]], np.ndarray]


class Refused(Exception):
    """Work the batcher did not take or did not finish; the client should retry later."""

    status_code = 503
    error_type = "unavailable"


class Overloaded(Refused):
    """Too many texts are waiting for inference (429)."""

    status_code = 429
    error_type = "overloaded"


class QueueTimeout(Refused):
    """The request waited longer than the queue's maximum wait for inference (503)."""

    error_type = "queue_timeout"


class ShuttingDown(Refused):
    """The server is stopping: queued work is refused (503)."""

    error_type = "shutting_down"


def plan_chunks(tokens: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Indices of the texts in chunks, longest texts first, each chunk within the budget of padded tokens
    (texts x longest) and of texts; a text longer than the budget is a chunk of its own."""
    order = sorted(range(len(tokens)), key=lambda i: -tokens[i])
    chunks: list[list[int]] = []
    for i in order:
        chunk = chunks[-1] if chunks else None
        if chunk and len(chunk) < max_batch_size and (len(chunk) + 1) * tokens[chunk[0]] <= max_batch_tokens:
            chunk.append(i)
        else:
            chunks.append([i])
    return chunks


def _pinner(cpus: list[int]) -> Callable[[], None]:
    """A thread initializer that pins the i-th thread it starts to ``cpus[i % len(cpus)]``."""
    count = itertools.count()
    lock = threading.Lock()

    def pin() -> None:
        with lock:
            i = next(count)
        os.sched_setaffinity(0, {cpus[i % len(cpus)]})  # 0: the calling thread

    return pin


@dataclass
class _Job:
    texts: list[str]
    longest: int  # tokens of the longest text
    tokens: int  # tokens of all its texts
    future: asyncio.Future[np.ndarray] = field(repr=False)
    taken: bool = False  # a worker took it for a model call


class Batcher:
    """Runs ``encode(texts) -> vectors`` on batches of queued chunks, ``workers`` batches at a time."""

    def __init__(
        self,
        encode: EncodeFn,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        workers: int = 1,
        max_batch_tokens: int = 1 << 30,
        on_batch: Callable[[int], None] | None = None,
        solo_encode: EncodeFn | None = None,
        solo_min_tokens: int = 0,
        max_padding: float = 1.0,
        cpus: Sequence[int] | None = None,
        max_queue_s: float | None = None,
    ) -> None:
        self._encode = encode
        self._max_queue_s = max_queue_s
        self._solo_encode = solo_encode
        self._solo_min_tokens = solo_min_tokens
        self._max_padding = max_padding
        self._running = 0  # model calls in progress
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._waiting: deque[_Job] = deque()  # chunks in arrival order
        self._arrived = asyncio.Condition()  # notified when chunks are added, or left for another worker
        self._queued_texts = 0
        self._inflight: set[asyncio.Future[np.ndarray]] = set()
        self._workers = workers
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="inference",
            initializer=_pinner(list(cpus)) if cpus else None,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._seconds_per_text: float | None = None  # a worker's time per text, moving average of its calls

    @property
    def queued(self) -> int:
        """Texts waiting for inference."""
        return self._queued_texts

    def expected_wait(self, texts: int) -> float | None:
        """Seconds the workers need for ``texts`` texts at their recent pace; None before the first call."""
        if self._seconds_per_text is None:
            return None
        return texts * self._seconds_per_text / self._workers

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name=f"batcher-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        """Stop the workers; requests in inference or still queued get an error."""
        futures = [*self._inflight, *(job.future for job in self._waiting)]
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in futures:
            if not future.done():
                future.set_exception(ShuttingDown("the server is shutting down; retry on another instance"))
        self._executor.shutdown(wait=True)

    def refuse_waiting(self) -> int:
        """Fail every request with chunks still queued with :class:`ShuttingDown` (model calls in progress
        finish); the number of queued texts refused."""
        queued = self._queued_texts
        self._drop(
            list(self._waiting), ShuttingDown("the server is shutting down; retry on another instance")
        )
        return queued

    def _drop(self, jobs: list[_Job], error: Exception) -> None:
        """Take ``jobs`` out of the queue and fail their requests with ``error``."""
        gone = {id(job) for job in jobs}
        if gone:
            self._waiting = deque(job for job in self._waiting if id(job) not in gone)
            self._queued_texts -= sum(len(job.texts) for job in jobs)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def _expire(self, jobs: list[_Job]) -> None:
        # A request that reached the model in part is finished: its first rows are already paid for.
        if not any(job.taken for job in jobs):
            waited = self._max_queue_s
            self._drop(jobs, QueueTimeout(f"waited {waited:g} s for inference without a turn; retry later"))

    async def submit(self, texts: list[str], tokens: Sequence[int]) -> np.ndarray:
        """Embed ``texts`` (``tokens``: their lengths as the model reads them) in the next batches."""
        if not self._tasks or all(task.done() for task in self._tasks):
            raise RuntimeError("batcher is not running")
        if self._queued_texts and self._queued_texts + len(texts) > self._max_queue:
            raise Overloaded(f"{self._queued_texts} texts are waiting for inference; retry later")
        loop = asyncio.get_running_loop()
        chunks = plan_chunks(tokens, self._max_batch_tokens, self._max_batch_size)
        jobs = [
            _Job([texts[i] for i in c], tokens[c[0]], sum(tokens[i] for i in c), loop.create_future())
            for c in chunks
        ]
        async with self._arrived:
            self._waiting.extend(jobs)
            self._queued_texts += len(texts)
            self._arrived.notify(len(jobs))
        expiry = loop.call_later(self._max_queue_s, self._expire, jobs) if self._max_queue_s else None
        try:
            parts = await asyncio.gather(*(job.future for job in jobs))
        finally:
            if expiry is not None:
                expiry.cancel()
            for job in jobs:
                job.future.cancel()  # no-op when done; drops the rest if this request failed or went away
                if not job.future.cancelled():
                    job.future.exception()  # seen: one failure is raised, the others need no warning
        out = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
        for chunk, part in zip(chunks, parts, strict=True):
            out[chunk] = part
        return out

    async def _next_batch(self) -> list[_Job]:
        async with self._arrived:
            await self._arrived.wait_for(lambda: bool(self._waiting))
            first = self._waiting.popleft()
            first.taken = True
            jobs, size, longest, real = [first], len(first.texts), first.longest, first.tokens
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._max_wait_s
            while size < self._max_batch_size:
                if not self._waiting:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    continue
                job = self._waiting[0]
                grown = size + len(job.texts)
                padded = grown * max(longest, job.longest)
                wasted = 1 - (real + job.tokens) / padded
                share = max(1, self._queued_texts // self._workers)  # this worker's part of what waits
                if (
                    grown > min(self._max_batch_size, share)
                    or padded > self._max_batch_tokens
                    or wasted > self._max_padding
                ):
                    break
                jobs.append(self._waiting.popleft())
                job.taken = True
                size, longest, real = grown, max(longest, job.longest), real + job.tokens
            self._queued_texts -= sum(len(job.texts) for job in jobs)
            if self._waiting:
                self._arrived.notify()  # what is left goes to another worker, if one is free
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
            encode = self._encode
            padded = len(texts) * max(job.longest for job in jobs)
            alone = self._running == 0 and not self._waiting
            if self._solo_encode is not None and alone and padded >= self._solo_min_tokens:
                encode = self._solo_encode
            self._running += 1
            self._inflight.update(job.future for job in jobs)
            start = time.perf_counter()
            try:
                vectors = await loop.run_in_executor(self._executor, encode, texts)
                pace = (time.perf_counter() - start) / len(texts)
                average = self._seconds_per_text
                self._seconds_per_text = pace if average is None else 0.9 * average + 0.1 * pace
            except Exception as e:  # the model failed: every request of the batch gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            finally:
                self._running -= 1
                self._inflight.difference_update(job.future for job in jobs)
            start = 0
            for job in jobs:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(vectors[start:end])
                start = end
