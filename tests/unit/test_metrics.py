"""Prometheus instruments count tokens, not outputs: one output may carry several tokens."""

import asyncio

from slmserve.engine.async_engine import accepted
from slmserve.engine.engine import RequestOutput
from slmserve.server.metrics import Metrics


def test_an_output_of_four_tokens_counts_four_inter_token_latencies():
    outs = [
        accepted("a", 3),
        RequestOutput("a", "a", [10], 3, 1),
        RequestOutput("a", "bcde", [11, 12, 13, 14], 3, 5, finish_reason="length"),
    ]

    async def run(metrics: Metrics) -> list[RequestOutput]:
        async def source():
            for out in outs:
                yield out

        return [out async for out in metrics.observe(source())]

    metrics = Metrics()
    assert asyncio.run(run(metrics)) == outs
    value = metrics.registry.get_sample_value
    assert value("slmserve_time_to_first_token_seconds_count") == 1
    assert value("slmserve_inter_token_latency_seconds_count") == 4
    assert value("slmserve_generation_tokens_total") == 5
    assert value("slmserve_prompt_tokens_total") == 3
