"""On its own call, a model host joins a request's outputs for an interval before they cross to the gateway."""

from __future__ import annotations

import asyncio

from slmserve.cluster.host import gathered
from slmserve.engine.async_engine import accepted
from slmserve.engine.sampling import SamplingParams
from tests.fakes import make_engine


def engine_outputs(max_tokens: int) -> list:
    """What the engine yields for one request: the accepted marker, then one output a token (logprobs on)."""
    engine = make_engine()
    engine.add_request("a", [1, 2], SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=1))
    outs = [accepted("a", 2)]
    while engine.has_work:
        outs += engine.step()
    return outs


def gather(outs: list, interval: float) -> list:
    async def source():
        for out in outs:
            yield out

    async def collect():
        return [out async for out in gathered(source(), interval)]

    return asyncio.run(collect())


def test_the_first_token_and_the_last_go_at_once_the_rest_joined_for_the_interval():
    outs = engine_outputs(max_tokens=11)
    sent = gather(outs, interval=3600)
    # accepted, the first token at once, then the other ten joined with the finish.
    assert [len(o.token_ids) for o in sent] == [0, 1, 10]
    assert sent[-1].finish_reason == "length" and sent[-1].num_output_tokens == 11
    assert all(o.finish_reason is None for o in sent[:-1])
    assert "".join(o.text for o in sent) == "".join(o.text for o in outs) == "hello world"
    assert [t for o in sent for t in o.token_ids] == [t for o in outs for t in o.token_ids]
    assert len([lp for o in sent for lp in o.logprobs]) == 11


def test_an_interval_of_zero_sends_every_output_as_it_came():
    outs = engine_outputs(max_tokens=5)
    assert gather(outs, interval=0) == outs
