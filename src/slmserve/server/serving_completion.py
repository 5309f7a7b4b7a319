"""POST /v1/completions: one or several prompts (text or token ids) -> Completion or SSE chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from slmserve.server import errors
from slmserve.server.logprobs import completion_logprobs
from slmserve.server.off_loop import off_loop
from slmserve.server.protocol import openai as oa
from slmserve.server.serving import Choice, Serving, now, usage
from slmserve.server.streams import merge, primed, sse_stream


def _prompt_list(prompt) -> list[str] | list[list[int]]:
    """OpenAI's four prompt forms as a list of prompts, each a text or a list of token ids."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    if not prompt:
        raise errors.APIError(400, "prompt must not be empty", param="prompt")
    return prompt


def _token_ids(serving: Serving, prompts: list[str] | list[list[int]]) -> list[list[int]]:
    """Each prompt's token ids; 400 for blocked words, an empty prompt or a token id outside the vocabulary."""
    serving.check_content(*(p for p in prompts if isinstance(p, str)))
    out = []
    for p in prompts:
        ids = serving.model.tokenizer.encode(p, add_special=True) if isinstance(p, str) else list(p)
        if not ids or any(not 0 <= t < serving.model.tokenizer.vocab_size for t in ids):
            raise errors.APIError(400, "prompt is empty or holds a token id outside the vocabulary", param="prompt")
        out.append(ids)
    return out


async def create_completion(serving: Serving, req: oa.CompletionRequest) -> oa.Completion | AsyncIterator[str]:
    adapter = serving.check_model(req.model)
    prompt_list = _prompt_list(req.prompt)
    serving.admit(len(prompt_list) * req.n)  # before any tokenizing: it may ask for more than the queue ever holds
    # Characters of text, or token ids to check: a long list of either is worked through off the event loop.
    prompts = await off_loop(sum(map(len, prompt_list)), lambda: _token_ids(serving, prompt_list))
    structure = await serving.structure(req.response_format)
    params = [serving.sampling_params(req, len(ids), req.logprobs, structure) for ids in prompts]
    echo = [serving.model.tokenizer.decode(ids) if req.echo else "" for ids in prompts]
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        streams = [serving.stream_choices(ids, p, req.n, adapter) for ids, p in zip(prompts, params, strict=True)]
        stream = await primed(merge(streams))
        return sse_stream(_chunks(serving, req, adapter, prompts, stream, echo, include_usage))
    results = await asyncio.gather(
        *(serving.collect(ids, p, req.n, adapter) for ids, p in zip(prompts, params, strict=True))
    )
    choices: list[oa.CompletionChoice] = []
    all_choices: list[Choice] = []
    for k, group in enumerate(results):
        for c in group:
            choices.append(
                oa.CompletionChoice(
                    index=len(choices),
                    text=echo[k] + c.text,
                    logprobs=completion_logprobs(serving.model.tokenizer, c.logprobs, len(echo[k])),
                    finish_reason=c.finish_reason,
                    closed_at_budget=c.closed,
                )
            )
        all_choices.extend(group)
    prompt_tokens = sum(len(ids) for ids in prompts)
    return oa.Completion(model=adapter or serving.model.name, choices=choices, usage=usage(prompt_tokens, all_choices))


async def _chunks(serving: Serving, req, adapter, prompts, stream, echo, include_usage) -> AsyncIterator[oa.Completion]:
    head = oa.Completion(model=adapter or serving.model.name, created=now(), choices=[])
    n = req.n
    for k in range(len(prompts)):
        for i in range(n):
            if echo[k]:
                yield head.model_copy(update={"choices": [oa.CompletionChoice(index=k * n + i, text=echo[k])]})
    choices = [Choice(i) for i in range(len(prompts) * n)]
    async for k, (i, out) in stream:
        choices[k * n + i].add(out)
        if out.text or out.finished:
            choice = oa.CompletionChoice(
                index=k * n + i,
                text=out.text,
                logprobs=completion_logprobs(serving.model.tokenizer, out.logprobs, 0),
                finish_reason=out.finish_reason,
                closed_at_budget=out.closed if out.finished else None,
            )
            yield head.model_copy(update={"choices": [choice]})
    if include_usage:
        prompt_tokens = sum(len(ids) for ids in prompts)
        yield head.model_copy(update={"choices": [], "usage": usage(prompt_tokens, choices)})
