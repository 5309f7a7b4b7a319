"""POST /v1/chat/completions: messages -> chat template -> engine -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from slmserve.server.protocol import openai as oa
from slmserve.server.serving import Choice, Serving, now, usage
from slmserve.server.streams import primed, sse_stream
from slmserve.server.tools import CallStream, ToolUse, render_history


async def create_chat_completion(
    serving: Serving, req: oa.ChatCompletionRequest
) -> oa.ChatCompletion | AsyncIterator[str]:
    adapter = serving.check_model(req.model)
    name = adapter or serving.model.name
    tool_use = ToolUse.of(req)
    raw = [m.model_dump(exclude_none=True) for m in req.messages]
    messages = render_history(raw)
    prompt_ids = await serving.chat_prompt_ids(*chat_messages(serving, messages, tool_use))
    top = (req.top_logprobs or 0) if req.logprobs else None
    history_calls = any(m.get("tool_calls") for m in raw)
    structure = await serving.structure(req.response_format, tool_use, history_calls)
    params = serving.sampling_params(req, len(prompt_ids), top, structure)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = await primed(serving.stream_choices(prompt_ids, params, req.n, adapter))
        return sse_stream(_chunks(serving, stream, name, len(prompt_ids), req.n, include_usage, tool_use))
    choices = await serving.collect(prompt_ids, params, req.n, adapter)
    return oa.ChatCompletion(
        model=name,
        choices=[_choice(serving, c, tool_use, req.logprobs) for c in choices],
        usage=usage(len(prompt_ids), choices),
    )


def chat_messages(
    serving: Serving, messages: list[dict], tool_use: ToolUse | None
) -> tuple[list[dict], list[dict] | None]:
    """The messages (history already rendered) and tools for the chat template: tools go to the template where it
    renders them, else into a system prompt."""
    if tool_use is None:
        return messages, None
    takes_tools = serving.model.chat_template.takes_tools
    messages = tool_use.prompt_messages(messages, takes_tools)
    return messages, [t.model_dump(exclude_none=True) for t in tool_use.tools] if takes_tools else None


def _choice(serving: Serving, c: Choice, tool_use: ToolUse | None, logprobs: bool) -> oa.ChatChoice:
    content, calls = ToolUse.parse(c.text) if tool_use else (c.text, [])
    return oa.ChatChoice(
        index=c.index,
        message=oa.AssistantMessage(content=content, tool_calls=calls or None),
        logprobs=serving.chat_logprobs(c.logprobs) if logprobs else None,
        finish_reason="tool_calls" if calls else c.finish_reason,
        closed_at_budget=c.closed,
    )


async def _chunks(
    serving: Serving, stream, model: str, prompt_tokens: int, n: int, include_usage: bool, tool_use: ToolUse | None
) -> AsyncIterator[oa.ChatCompletionChunk]:
    head = oa.ChatCompletionChunk(id=oa._id("chatcmpl"), created=now(), model=model, choices=[])
    choices = [Choice(i) for i in range(n)]

    def chunk(i: int, delta: oa.DeltaMessage, out=None, finish_reason: str | None = None) -> oa.ChatCompletionChunk:
        lps = serving.chat_logprobs(out.logprobs) if out is not None else None
        closed = choices[i].closed if finish_reason else None
        one = oa.ChatChunkChoice(
            index=i, delta=delta, logprobs=lps, finish_reason=finish_reason, closed_at_budget=closed
        )
        return head.model_copy(update={"choices": [one]})

    for i in range(n):
        yield chunk(i, oa.DeltaMessage(role="assistant", content=""))
    # An answer of tool calls streams as calls: True for those; None while an "auto" answer has not shown its
    # first character (a call begins with "<", which the grammar denies plain text).
    calls: list[bool | None] = [None if tool_use and tool_use.choice == "auto" else tool_use is not None] * n
    call_streams = [CallStream() for _ in range(n)]
    async for i, out in stream:
        choices[i].add(out)
        if calls[i] is None and choices[i].text:
            calls[i] = choices[i].text.startswith("<")
        if calls[i]:
            for delta in call_streams[i].feed(out.text):
                yield chunk(i, delta)
            if out.finished:
                yield _calls_end(chunk, i, choices[i], call_streams[i])
        elif calls[i] is False:
            if out.text or out.finished:
                yield chunk(i, oa.DeltaMessage(content=out.text or None), out, out.finish_reason)
        elif out.finished:  # an "auto" answer that ended before its first character
            yield chunk(i, oa.DeltaMessage(), out, out.finish_reason)
    if include_usage:
        yield head.model_copy(update={"choices": [], "usage": usage(prompt_tokens, choices)})


def _calls_end(chunk, i: int, c: Choice, calls: CallStream) -> oa.ChatCompletionChunk:
    """The last chunk of an answer streamed as calls: tool_calls when they were written whole; if the model wrote no
    call at all (it stopped early), its text as content, as the non-streamed answer has it."""
    if calls.calls == 0:
        return chunk(i, oa.DeltaMessage(content=c.text or None), finish_reason=c.finish_reason)
    return chunk(i, oa.DeltaMessage(), finish_reason="tool_calls" if c.finish_reason == "stop" else c.finish_reason)
