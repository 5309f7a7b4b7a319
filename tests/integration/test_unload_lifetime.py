"""Unloading a model while requests still hold it (#15): the process crashed in libllama when a request that had
taken the model before /slm/unload tokenized with its freed vocabulary. Now the weights live until their last
user lets go, and are freed then."""

from __future__ import annotations

import asyncio
import gc

from slmserve.engine.runner_llamacpp import LlamaCppRunner
from slmserve.models.registry import resolve_model
from slmserve.server.app_state import AppState
from slmserve.settings import Settings

PROMPT = "hello world " * 50


def test_the_weights_outlive_the_runner_while_its_tokenizer_is_held():
    path = resolve_model("smollm2-135m-instruct").path
    runner = LlamaCppRunner(path, n_ctx=512, n_seq_max=1, n_batch=64, n_threads=1)
    tokenizer, freed = runner.tokenizer, runner._weights.freed
    ids = tokenizer.encode(PROMPT)
    runner.close()
    del runner
    gc.collect()
    assert freed.alive  # still held by the tokenizer
    assert tokenizer.encode(PROMPT) == ids and tokenizer.decode(ids).count("hello world") == 50
    del tokenizer
    gc.collect()
    assert not freed.alive  # and freed once nothing holds it


def test_a_request_holding_the_model_across_an_unload_still_tokenizes_and_the_model_is_freed_after():
    async def scenario() -> None:
        state = AppState(Settings(max_running=2, ctx_size=1024)).default
        await state.load()
        serving = state.serving  # what a request took before the unload
        freed = serving.model.runner._weights.freed
        before = serving.model.tokenizer.encode(PROMPT)
        assert await state.unload(drain_seconds=1)
        assert state.status == "unloaded" and freed.alive
        assert serving.model.tokenizer.encode(PROMPT) == before  # no use of freed memory
        del serving
        gc.collect()
        assert not freed.alive

    asyncio.run(scenario())
