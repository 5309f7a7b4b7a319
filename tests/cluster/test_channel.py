"""Channels (cluster/channel.py): a model host's outputs for many of a gateway's requests in one message a step.

In one process: a ModelHost on the fake engine, and the gateway's RayEngineClient on a fake DeploymentHandle
that runs the host's calls as Ray does (each call's generator driven on its own, its items buffered, cancel()
closing it; a call whose replica died raises). The real Ray path is in test_cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections import Counter

import pytest

from slmserve.cluster.channel import ChannelRequest, Failed, GatewayChannels, Mailbox, Moved
from slmserve.cluster.client import RayEngineClient
from slmserve.cluster.host import ModelHost
from slmserve.cluster.router import PrefixAffinityRouter
from slmserve.engine.async_engine import AsyncEngine, EngineDeadError
from slmserve.engine.engine import RequestOutput
from slmserve.engine.sampling import SamplingParams
from tests.fakes import ScriptedRunner, make_engine


class FakeCall:
    """One Ray streaming call: the host's generator driven by a task of its own, its items buffered."""

    def __init__(self, gen, counts: Counter, method: str) -> None:
        self._items: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.create_task(self._drive(gen, counts, method))

    async def _drive(self, gen, counts: Counter, method: str) -> None:
        try:
            async for item in gen:
                counts[method] += 1
                self._items.put_nowait(("item", item))
            self._items.put_nowait(("end", None))
        except asyncio.CancelledError:
            self._items.put_nowait(("error", EngineDeadError("the replica died")))
            raise
        except Exception as exc:
            self._items.put_nowait(("error", exc))

    def __aiter__(self):
        return self

    async def __anext__(self):
        kind, value = await self._items.get()
        if kind == "item":
            return value
        if kind == "end":
            raise StopAsyncIteration
        raise value

    def cancel(self) -> None:
        self._task.cancel()


class FakeHandle:
    """handle.options(stream=True).<method>.remote(arg), on one host; counts the messages of each method."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.messages: Counter = Counter()
        self.calls: dict[str, list[FakeCall]] = {"generate": [], "channel": []}

    def options(self, stream: bool) -> FakeHandle:
        return self

    def __getattr__(self, method: str):
        def remote(arg):
            call = FakeCall(getattr(self.host, method)(arg), self.messages, method)
            self.calls[method].append(call)
            return call

        return types.SimpleNamespace(remote=remote)


class SlowRunner(ScriptedRunner):
    """A step takes 2 ms, as a real one takes some: long requests are still running when a test acts."""

    def run(self, batch):
        time.sleep(0.002)
        return super().run(batch)


def make_host(script: bytes = b"hello world", interval: float = 0.0) -> ModelHost:
    host = ModelHost.__new__(ModelHost)
    host.model = types.SimpleNamespace(close=lambda: None)
    host._start(AsyncEngine(make_engine(SlowRunner(script), max_running=8)), "m#r1", interval)
    return host


def make_client(host: ModelHost) -> tuple[RayEngineClient, FakeHandle]:
    handle = FakeHandle(host)
    return RayEngineClient(handle, {"max_running": 8, "max_waiting": 8, "embed_len": 16}, replicas=1), handle


async def answer(client: RayEngineClient, prompt: str, **params) -> list[RequestOutput]:
    params = SamplingParams(temperature=0, **({"max_tokens": 64} | params))
    return [out async for out in client.generate(list(prompt.encode()), params)]


def text(outs: list[RequestOutput]) -> str:
    return "".join(o.text for o in outs)


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def hosted(script: bytes = b"hello world", channel_open: bool = False):
    """A host on the fake engine and a gateway's client of it, shut down after; with channel_open, a first request
    has opened the client's channel to the host."""
    host = make_host(script)
    client, handle = make_client(host)
    try:
        if channel_open:
            await answer(client, "warm", max_tokens=2)
            await until(lambda: host._mailboxes)
        yield host, client, handle
    finally:
        client.shutdown()
        host.engine.shutdown()


def test_requests_after_the_first_come_on_one_channel_a_step_at_a_time():
    async def run():
        async with hosted() as (host, client, handle):
            # On its own call; the channel opens meanwhile, and the host moves it there half way.
            first = await answer(client, "hi")
            assert text(first) == "hello world" and first[-1].finish_reason == "stop"
            assert handle.messages["generate"] < 12  # not one message a token
            await until(lambda: host._mailboxes)
            before = handle.messages.copy()
            answers = await asyncio.gather(*(answer(client, f"q{i}") for i in range(6)))
            return answers, handle.messages - before, handle.calls

    answers, messages, calls = asyncio.run(run())
    assert [text(a) for a in answers] == ["hello world"] * 6
    assert all(a[-1].finish_reason == "stop" and a[-1].num_output_tokens == 12 for a in answers)
    assert len(calls["channel"]) == 1  # one channel for all of them
    # Each request's own call: the host's name, the request taken, its first token (the shortest way), Moved.
    # Their other 66 tokens came on the channel, a step's tokens of all six in one message: 11 steps (a few more
    # if they were taken at different steps).
    assert messages["generate"] == 6 * 4, messages
    assert messages["channel"] <= 16, messages


def test_a_client_that_leaves_aborts_its_moved_request():
    async def run():
        async with hosted(b"x" * 5000, channel_open=True) as (host, client, _):
            stream = client.generate(list(b"long"), SamplingParams(temperature=0, max_tokens=4000, ignore_eos=True))
            got = 0
            async for out in stream:
                got += len(out.token_ids)
                if got >= 20:
                    break
            await stream.aclose()
            await until(lambda: not host.engine.engine.requests)  # the engine let it go
            box = next(iter(host._mailboxes.values()))
            return got, box.requests, client.num_running + client.num_waiting

    got, moved_left, counted = asyncio.run(run())
    assert got >= 20 and moved_left == 0 and counted == 0


def test_a_channel_that_dies_fails_its_requests_and_none_hangs():
    async def run():
        async with hosted(b"y" * 5000, channel_open=True) as (host, client, handle):
            tasks = [asyncio.create_task(answer(client, f"s{i}", max_tokens=4000, ignore_eos=True)) for i in range(3)]
            await until(lambda: next(iter(host._mailboxes.values())).requests == 3)
            handle.calls["channel"][0].cancel()  # as when Ray loses the channel's call
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            # The host let them go too, and the next request is served (on its own call, then a new channel).
            await until(lambda: not host.engine.engine.requests)
            after = await answer(client, "again")
            return results, after

    results, after = asyncio.run(run())
    assert all(isinstance(r, EngineDeadError) for r in results), results
    assert text(after) == "y" * 64


def test_a_request_moved_before_its_channel_opened_is_followed():
    async def run():
        opened = asyncio.Event()

        async def slow_open(request: ChannelRequest):
            await opened.wait()
            yield []
            yield [RequestOutput("a", "hi", [104, 105], 2, 2, finish_reason="stop")]

        channels = GatewayChannels(slow_open)
        channels.register("a")
        channels.want("m#r1")
        await asyncio.sleep(0)
        (channel,) = channels._moved
        follow = asyncio.create_task(anext(channels.follow(Moved(channel), "a")))
        opened.set()
        return await asyncio.wait_for(follow, 5)

    assert asyncio.run(run()).text == "hi"


def test_a_moved_request_whose_engine_fails_gets_the_error():
    async def run():
        channels = GatewayChannels(lambda request: None)
        channels.register("a")
        channels._moved["c1"] = set()
        outputs = channels.follow(Moved("c1"), "a")
        channels._queues["a"].put_nowait(Failed("a", ValueError("the prompt is too long")))
        with pytest.raises(ValueError, match="too long"):
            await anext(outputs)

    asyncio.run(run())


def out(request_id: str, tokens: int, done: bool = False) -> RequestOutput:
    return RequestOutput(request_id, "x", [120], 2, tokens, finish_reason="stop" if done else None)


def test_a_mailbox_joins_tokens_for_its_interval_and_sends_urgent_ones_at_once():
    async def run():
        box = Mailbox("c", interval=0.2, idle=0.3)
        box.requests = 1
        sent: list[tuple[float, list]] = []

        async def collect():
            start = asyncio.get_running_loop().time()
            async for batch in box.batches():
                at = round(asyncio.get_running_loop().time() - start, 2)
                sent.append((at, [(o.request_id, o.num_output_tokens, len(o.token_ids)) for o in batch]))

        task = asyncio.create_task(collect())
        box.put(out("a", 1))  # a first token: at once
        box.put(out("b", 1))
        await asyncio.sleep(0.05)
        box.put(out("a", 2))  # held: the interval is not up
        await asyncio.sleep(0.05)
        box.put(out("a", 3))  # joined with the one held
        await asyncio.sleep(0.3)  # sent when the interval is up, with no later output to wait for
        box.put(out("a", 4, done=True))  # the last: at once
        await asyncio.sleep(0.05)
        box.requests = 0
        await asyncio.wait_for(task, 2)  # idle with no request: the channel ends
        return sent

    sent = asyncio.run(run())
    assert [batch for _, batch in sent] == [[("a", 1, 1), ("b", 1, 1)], [("a", 3, 2)], [("a", 4, 1)]]
    assert sent[0][0] < 0.05 and 0.18 <= sent[1][0] <= 0.3


def test_the_router_sends_a_channel_only_to_the_replica_it_names():
    def replica(unique_id: str):
        return types.SimpleNamespace(replica_id=types.SimpleNamespace(unique_id=unique_id))

    def pending(arg):
        return types.SimpleNamespace(args=[arg], routing_context=types.SimpleNamespace(should_backoff=False))

    router = PrefixAffinityRouter.__new__(PrefixAffinityRouter)
    router.initialize_state()
    replicas = [replica("r1"), replica("r2")]
    request = pending(ChannelRequest("m#r2", "g"))
    assert asyncio.run(router.choose_replicas(replicas, request)) == [[replicas[1]]]
    gone = pending(ChannelRequest("m#r9", "g"))
    assert asyncio.run(router.choose_replicas(replicas, gone)) == [[]]
    assert gone.routing_context.should_backoff  # Ray waits before it asks again
