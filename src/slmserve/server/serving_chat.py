"""POST /v1/chat/completions: messages -> chat template -> engine -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from slmserve.models.chat_template import text_of
from slmserve.server.protocol import openai as oa
from slmserve.server.serving import Choice, Serving, now, sse_stream, usage


async def create_chat_completion(
    serving: Serving, req: oa.ChatCompletionRequest
) -> oa.ChatCompletion | AsyncIterator[str]:
    adapter = serving.check_model(req.model)
    name = adapter or serving.model.name
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    serving.check_content(*(text_of(m.get("content")) for m in messages))
    prompt = serving.model.chat_template.render(messages)
    # The template writes any BOS itself, as Hugging Face's apply_chat_template does.
    prompt_ids = serving.model.tokenizer.encode(prompt, add_special=False)
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = serving.sampling_params(req, len(prompt_ids), top, await serving.grammar(req.response_format))
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = serving.stream_choices(prompt_ids, params, req.n, adapter)
        return sse_stream(_chunks(serving, stream, name, len(prompt_ids), req.n, include_usage))
    choices = await serving.collect(prompt_ids, params, req.n, adapter)
    return oa.ChatCompletion(
        model=name,
        choices=[
            oa.ChatChoice(
                index=c.index,
                message=oa.AssistantMessage(content=c.text),
                logprobs=serving.chat_logprobs(c.logprobs) if req.logprobs else None,
                finish_reason=c.finish_reason,
            )
            for c in choices
        ],
        usage=usage(len(prompt_ids), choices),
    )


async def _chunks(
    serving: Serving, stream, model: str, prompt_tokens: int, n: int, include_usage: bool
) -> AsyncIterator[oa.ChatCompletionChunk]:
    head = oa.ChatCompletionChunk(id=oa._id("chatcmpl"), created=now(), model=model, choices=[])

    def chunk(**kw) -> oa.ChatCompletionChunk:
        return head.model_copy(update=kw)

    for i in range(n):
        yield chunk(choices=[oa.ChatChunkChoice(index=i, delta=oa.DeltaMessage(role="assistant", content=""))])
    choices = [Choice(i) for i in range(n)]
    async for i, out in stream:
        choices[i].add(out)
        if out.text or out.finished:
            yield chunk(
                choices=[
                    oa.ChatChunkChoice(
                        index=i,
                        delta=oa.DeltaMessage(content=out.text or None),
                        logprobs=serving.chat_logprobs(out.logprobs),
                        finish_reason=out.finish_reason,
                    )
                ]
            )
    if include_usage:
        yield chunk(choices=[], usage=usage(prompt_tokens, choices))
