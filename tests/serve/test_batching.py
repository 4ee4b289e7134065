"""Dynamic batching with a fake model: which texts go into which inference call."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from serve.batching import Batcher, Overloaded, ShuttingDown, plan_chunks


class FakeModel:
    """Embeds the text "7" as [7.0]; records every batch; can hold the first call until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.gate.set()
        self.fail_next = False

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model failed")
        return np.array([[float(t)] for t in texts], dtype=np.float32)


async def until(event: threading.Event) -> None:
    await asyncio.to_thread(event.wait, 10)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=30))


def two_at_once() -> Callable[[list[str]], np.ndarray]:
    """A model whose calls fail (the barrier breaks) unless two of them are inside it at the same time."""
    both_inside = threading.Barrier(2, timeout=5)

    def model(texts: list[str]) -> np.ndarray:
        both_inside.wait()
        return np.array([[float(t)] for t in texts], dtype=np.float32)

    return model


def ones(n: int) -> list[int]:
    return [1] * n


def test_plan_chunks_longest_first_within_the_padded_budget() -> None:
    # padded size = texts x longest: 100+90 -> 2 x 100 = 200 fits; 7 and 5 -> 2 x 7
    assert plan_chunks([5, 100, 7, 90], max_batch_tokens=200, max_batch_size=64) == [[1, 3], [2, 0]]
    assert plan_chunks([5, 100, 7, 90], max_batch_tokens=199, max_batch_size=64) == [[1], [3, 2], [0]]
    assert plan_chunks([300], max_batch_tokens=256, max_batch_size=64) == [[0]]  # too long: alone
    assert plan_chunks([1] * 5, max_batch_tokens=256, max_batch_size=2) == [[0, 1], [2, 3], [4]]
    assert plan_chunks([], max_batch_tokens=256, max_batch_size=2) == []


def test_requests_queued_during_inference_share_the_next_call() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=64, max_wait_s=0, max_queue=100)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["1"], ones(1)))
        await until(model.entered)
        others = [
            asyncio.create_task(batcher.submit([str(10 * i), str(10 * i + 1)], ones(2))) for i in range(1, 4)
        ]
        await asyncio.sleep(0.05)
        assert batcher.queued == 6
        model.gate.set()
        assert (await first).tolist() == [[1.0]]
        for i, task in enumerate(others, start=1):
            assert (await task)[:, 0].tolist() == [10.0 * i, 10.0 * i + 1]  # each request gets its own rows
        assert model.batches == [["1"], ["10", "11", "20", "21", "30", "31"]]
        assert batcher.queued == 0
        await batcher.stop()

    run(scenario())


def test_batches_respect_the_size_and_token_budgets() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0, max_queue=100, max_batch_tokens=40)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["0"], ones(1)))
        await until(model.entered)
        tasks = [
            asyncio.create_task(batcher.submit(["1", "1", "1"], [5, 5, 5])),
            asyncio.create_task(batcher.submit(["2", "2", "2"], [5, 5, 5])),  # 6 texts > max_batch_size
            asyncio.create_task(batcher.submit(["3"], [5])),
            asyncio.create_task(batcher.submit(["4", "5"], [30, 10])),  # 2 x 30 > 40: cut in two chunks
            asyncio.create_task(batcher.submit(["6"], [9])),  # 2 x 10 fits with the "5"
        ]
        await asyncio.sleep(0.05)
        model.gate.set()
        await first
        results = await asyncio.gather(*tasks)
        assert results[3][:, 0].tolist() == [4.0, 5.0]  # rows back in the request's order
        assert model.batches == [["0"], ["1", "1", "1"], ["2", "2", "2", "3"], ["4"], ["5", "6"]]
        await batcher.stop()

    run(scenario())


def test_a_long_request_is_split_across_workers() -> None:
    async def scenario() -> None:
        batcher = Batcher(
            two_at_once(), max_batch_size=64, max_wait_s=0, max_queue=10, workers=2, max_batch_tokens=100
        )
        batcher.start()
        vectors = await batcher.submit(["1", "2"], [100, 100])  # one request, two chunks, two workers
        assert vectors[:, 0].tolist() == [1.0, 2.0]
        await batcher.stop()

    run(scenario())


def test_two_requests_for_two_idle_workers_run_side_by_side() -> None:
    async def scenario() -> None:
        batcher = Batcher(two_at_once(), max_batch_size=64, max_wait_s=0, max_queue=10, workers=2)
        batcher.start()
        one, two = await asyncio.gather(batcher.submit(["1"], [10]), batcher.submit(["2"], [10]))
        assert one.tolist() == [[1.0]] and two.tolist() == [[2.0]]
        await batcher.stop()

    run(scenario())


def test_a_worker_takes_its_share_of_the_queue_and_leaves_the_rest() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=64, max_wait_s=0, max_queue=100, workers=2)
        batcher.start()
        held = [asyncio.create_task(batcher.submit([str(i)], [5])) for i in (1, 2)]
        while len(model.batches) < 2:  # both workers inside the model
            await asyncio.sleep(0.01)
        queued = [asyncio.create_task(batcher.submit([str(i)], [5])) for i in range(3, 9)]
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(*held, *queued)
        # 6 texts wait for 2 workers: the first free one takes 3; then 3 wait: 1; 2 wait: 1; the last: 1.
        assert [len(batch) for batch in model.batches[2:]] == [3, 1, 1, 1]
        assert sorted(text for batch in model.batches for text in batch) == [str(i) for i in range(1, 9)]
        await batcher.stop()

    run(scenario())


def test_max_wait_gathers_requests_that_arrive_shortly_after() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher = Batcher(model, max_batch_size=64, max_wait_s=0.2, max_queue=100)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["1"], ones(1)))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(batcher.submit(["2"], ones(1)))
        await asyncio.gather(first, second)
        assert model.batches == [["1", "2"]]
        await batcher.stop()

    run(scenario())


def test_full_queue_raises_overloaded() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=1, max_wait_s=0, max_queue=2)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(["1"], ones(1)))]
        await until(model.entered)
        tasks.append(asyncio.create_task(batcher.submit(["2", "3"], ones(2))))
        await asyncio.sleep(0.05)
        assert batcher.queued == 2
        with pytest.raises(Overloaded):
            await batcher.submit(["4"], ones(1))
        model.gate.set()
        assert len(await asyncio.gather(*tasks)) == 2
        await batcher.stop()

    run(scenario())


def test_a_model_error_fails_its_batch_only() -> None:
    async def scenario() -> None:
        model = FakeModel()
        model.fail_next = True
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0, max_queue=10)
        batcher.start()
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(["1"], ones(1))
        assert (await batcher.submit(["2"], ones(1))).tolist() == [[2.0]]
        await batcher.stop()

    run(scenario())


def test_cancelled_requests_are_skipped_and_stop_fails_waiting_ones() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0, max_queue=10)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["1"], ones(1)))
        await until(model.entered)
        gone = asyncio.create_task(batcher.submit(["2"], ones(1)))
        kept = asyncio.create_task(batcher.submit(["3"], ones(1)))
        await asyncio.sleep(0.05)
        gone.cancel()
        model.gate.set()
        await first
        assert (await kept).tolist() == [[3.0]]
        assert model.batches == [["1"], ["3"]]

        model.gate.clear()
        held = asyncio.create_task(batcher.submit(["4"], ones(1)))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.submit(["5"], ones(1)))
        await asyncio.sleep(0.05)
        model.gate.set()
        await batcher.stop()
        for task in (held, waiting):  # in inference or queued when the server stops: both get an error
            with pytest.raises(ShuttingDown, match="shutting down"):
                await task

    run(scenario())


def test_a_lone_long_batch_goes_to_the_solo_model() -> None:
    async def scenario() -> None:
        narrow, solo = FakeModel(), FakeModel()
        batcher = Batcher(
            narrow, max_batch_size=64, max_wait_s=0, max_queue=100, workers=2, solo_encode=solo,
            solo_min_tokens=50,
        )  # fmt: skip
        batcher.start()
        assert (await batcher.submit(["1"], [60])).tolist() == [[1.0]]  # alone and long: solo
        assert (await batcher.submit(["2"], [10])).tolist() == [[2.0]]  # alone but short: narrow
        narrow.gate.clear()
        narrow.entered.clear()
        short = asyncio.create_task(batcher.submit(["3"], [10]))
        await until(narrow.entered)  # held inside the model
        long = asyncio.create_task(batcher.submit(["4"], [60]))  # long, but another call is running
        await asyncio.sleep(0.05)
        narrow.gate.set()
        assert (await short).tolist() == [[3.0]] and (await long).tolist() == [[4.0]]
        assert solo.batches == [["1"]]
        assert narrow.batches == [["2"], ["3"], ["4"]]
        await batcher.stop()

    run(scenario())


def test_requests_that_would_be_mostly_padding_do_not_share_a_call() -> None:
    async def scenario() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(model, max_batch_size=64, max_wait_s=0, max_queue=100, max_padding=0.2)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["0"], [5]))
        await until(model.entered)
        tasks = [
            asyncio.create_task(batcher.submit(["1"], [10])),
            asyncio.create_task(batcher.submit(["2"], [9])),  # 2 x 10 padded, 19 real: 5% padding
            asyncio.create_task(batcher.submit(["3"], [4])),  # 3 x 10 padded, 23 real: 23% > 20%
            asyncio.create_task(batcher.submit(["4"], [3])),  # with "3": 2 x 4 padded, 7 real: 12.5%
        ]
        await asyncio.sleep(0.05)
        model.gate.set()
        await first
        await asyncio.gather(*tasks)
        assert model.batches == [["0"], ["1", "2"], ["3", "4"]]
        await batcher.stop()

    run(scenario())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="thread affinity is Linux-only")
def test_workers_are_pinned_to_their_cpus_and_the_caller_is_not() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    cpus = [allowed[-1]]  # one core for every worker: each worker thread reports where it may run
    seen: list[set[int]] = []

    def encode(texts: list[str]) -> np.ndarray:
        seen.append(os.sched_getaffinity(0))
        return np.array([[float(t)] for t in texts], dtype=np.float32)

    async def scenario() -> None:
        batcher = Batcher(encode, 64, 0.0, 1024, workers=2, cpus=cpus)
        batcher.start()
        await asyncio.gather(*(batcher.submit([str(i)], ones(1)) for i in range(6)))
        await batcher.stop()

    run(scenario())
    assert seen and all(s == set(cpus) for s in seen)
    assert sorted(os.sched_getaffinity(0)) == allowed  # the event loop's thread keeps every core
