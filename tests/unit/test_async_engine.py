"""AsyncEngine: the thread bridge, with a scripted runner."""

import asyncio
import threading

import numpy as np
import pytest

from slmserve.engine.async_engine import AsyncEngine, EngineDeadError, EngineStepError
from slmserve.engine.engine import AdapterInUseError
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import QueueFullError
from slmserve.server.engine_client import EngineClient
from tests.fakes import ScriptedRunner, make_engine


class FlakyRunner(ScriptedRunner):
    """Fails its n-th batch."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def run(self, batch):
        if len(self.batches) + 1 == self.fail_at:
            self.batches.append(batch)
            raise RuntimeError("llama_decode failed")
        return super().run(batch)


async def text(engine: AsyncEngine, prompt: list[int], max_tokens: int = 50, adapter=None, **kw) -> str:
    out = ""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, **kw)
    async for o in engine.generate(prompt, params, adapter=adapter):
        out += o.text
    return out


async def wait_for(condition, seconds: float = 10) -> None:
    """Poll until condition() holds; fail (never hang) after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def test_requests_stream_concurrently_and_finish():
    async def main():
        engine = AsyncEngine(make_engine())
        try:
            return await asyncio.gather(*(text(engine, [i + 1]) for i in range(3)))
        finally:
            engine.shutdown()

    assert asyncio.run(main()) == ["hello world"] * 3


def test_a_failed_step_ends_its_requests_and_the_engine_keeps_serving():
    async def main():
        engine = AsyncEngine(make_engine(FlakyRunner(fail_at=3)))
        try:
            with pytest.raises(EngineStepError, match="llama_decode failed"):
                await text(engine, [1])
            assert engine.num_running == 0
            return await text(engine, [2])
        finally:
            engine.shutdown()

    assert asyncio.run(main()) == "hello world"


def test_cancelling_the_consumer_aborts_the_request():
    async def main():
        engine = AsyncEngine(make_engine(ScriptedRunner(script=b"x" * 10_000)))
        try:
            # Long enough that it cannot finish on its own before it is cancelled.
            task = asyncio.create_task(text(engine, [1], max_tokens=10**9, ignore_eos=True))
            await wait_for(lambda: engine.num_running == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_for(lambda: engine.num_running == 0)
            return engine.num_running
        finally:
            engine.shutdown()

    assert asyncio.run(main()) == 0


def test_queue_full_and_shutdown_are_reported_to_callers():
    async def main():
        engine = AsyncEngine(make_engine(ScriptedRunner(script=b"x" * 10_000), max_running=1, max_waiting=0))
        first = engine.generate([1], SamplingParams(max_tokens=5000))
        await anext(first)  # accepted: the one running slot
        with pytest.raises(QueueFullError):
            await text(engine, [1])
        await first.aclose()
        engine.shutdown()
        with pytest.raises(EngineDeadError):
            await text(engine, [1])

    asyncio.run(main())


class AdapterRunner(ScriptedRunner):
    """A runner that holds LoRA adapters by name, as the real runners do."""

    def __init__(self) -> None:
        super().__init__(script=b"x" * 10_000)
        self.adapters: dict[str, str] = {}

    def prepare_adapter(self, path: str) -> str:
        return path

    def load_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        del self.adapters[name]


def test_the_in_process_engine_is_an_engine_client_and_refuses_to_unload_an_adapter_in_use():
    async def main():
        runner = AdapterRunner()
        engine = AsyncEngine(make_engine(runner))
        assert isinstance(engine, EngineClient)
        try:
            await engine.load_adapter("pirate", "/adapters/pirate")
            task = asyncio.create_task(text(engine, [1], max_tokens=10**9, ignore_eos=True, adapter="pirate"))
            await wait_for(lambda: engine.num_running == 1)
            with pytest.raises(AdapterInUseError, match="in use by 1 request"):
                await engine.unload_adapter("pirate")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await wait_for(lambda: engine.num_running == 0)
            await engine.unload_adapter("pirate")
            return runner.adapters
        finally:
            engine.shutdown()

    assert asyncio.run(main()) == {}


def test_embeddings_go_to_the_runner_in_calls_within_its_bounds_and_come_back_in_order():
    async def main():
        runner = ScriptedRunner()
        engine = AsyncEngine(make_engine(runner))
        try:
            inputs = [[i] * n for i, n in enumerate([5, 5, 5, 2, 1, 1, 1, 16, 3])]
            out = await engine.embed(inputs)
            with pytest.raises(ValueError, match="1 to 16 tokens"):
                await engine.embed([[1] * 17])
            return out, runner.embed_calls
        finally:
            engine.shutdown()

    out, calls = asyncio.run(main())
    # Each vector is its input's mean hidden state ([1, i] here), normalized.
    assert np.allclose(out, [np.array([1, i]) / np.hypot(1, i) for i in range(9)])
    # Packed greedily, at most 3 inputs and 8 tokens a call; the 16-token input alone, in pieces of 8.
    assert calls == [
        (None, [5]), (None, [5]), (None, [5, 2, 1]), (None, [1, 1]), (0, [8]), (8, [8]), (None, [3])
    ]  # fmt: skip


def test_long_inputs_of_concurrent_embeddings_requests_go_in_pieces_one_input_at_a_time():
    async def main():
        runner = ScriptedRunner()
        engine = AsyncEngine(make_engine(runner))
        try:
            requests = [[[i] * 16, [i] * 3, [i + 10] * 12] for i in range(1, 5)]
            return await asyncio.gather(*(engine.embed(r) for r in requests)), runner.embed_calls
        finally:
            engine.shutdown()

    outs, calls = asyncio.run(main())
    for i, out in enumerate(outs, 1):  # the fake runner asserts each piece continues its own input's tokens
        assert np.allclose(out, [np.array([1, t]) / np.hypot(1, t) for t in (i, i, i + 10)])
    assert sum(start is not None for start, _ in calls) == 4 * (2 + 2)


class SlowRunner(ScriptedRunner):
    """Holds the engine thread in a step until released, as a long prefill does."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def run(self, batch):
        self.release.wait(10)
        return super().run(batch)


def test_requests_whose_clients_left_before_the_engine_took_them_do_not_count_as_waiting():
    async def main():
        runner = SlowRunner()
        engine = AsyncEngine(make_engine(runner))
        params = SamplingParams(temperature=0, max_tokens=50)
        try:
            busy = engine.generate([1], params)
            await anext(busy)
            await wait_for(lambda: engine.num_running == 1)  # the engine thread is now inside a step
            for i in range(engine.max_waiting + 10):  # each client leaves after its first (accepted) output
                gone = engine.generate([i + 2], params)
                await anext(gone)
                await gone.aclose()
            assert engine.num_waiting == 0
            runner.release.set()
            await busy.aclose()
        finally:
            runner.release.set()
            engine.shutdown()

    asyncio.run(main())


def test_outputs_for_an_event_loop_that_has_closed_do_not_stop_the_engine():
    runner = SlowRunner()
    engine = AsyncEngine(make_engine(runner))
    try:

        async def leave_mid_request():
            gone = engine.generate([1], SamplingParams(temperature=0, max_tokens=50))
            await anext(gone)
            await wait_for(lambda: engine.num_running == 1)  # the engine thread is inside a step for it

        asyncio.run(leave_mid_request())  # this loop closes while the step is still running
        runner.release.set()  # the step ends and posts its outputs to the closed loop
        assert asyncio.run(asyncio.wait_for(text(engine, [2]), 10)) == "hello world"
    finally:
        runner.release.set()
        engine.shutdown()
