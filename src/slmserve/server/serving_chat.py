"""POST /v1/chat/completions: messages -> chat template -> engine -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from slmserve.engine.sampling import SamplingParams
from slmserve.server import errors
from slmserve.server.logprobs import chat_logprobs
from slmserve.server.protocol import openai as oa
from slmserve.server.serving import Choice, Serving, now, usage
from slmserve.server.streams import primed, sse_stream
from slmserve.server.tools import CallStream, ToolUse, render_history


@dataclass
class ChatRun:
    """A chat request made ready for the engine: the prompt, the sampling, and how to read the answer back. Each
    API family that speaks chat (chat completions, Responses, Messages) makes one and renders its outputs."""

    serving: Serving
    model: str  # the name answers carry: the adapter's, else the model's
    adapter: str | None
    prompt_ids: list[int]
    params: SamplingParams
    tool_use: ToolUse | None
    n: int = 1
    logprobs: bool = False

    async def complete(self) -> oa.ChatCompletion:
        choices = await self.serving.collect(self.prompt_ids, self.params, self.n, self.adapter)
        return oa.ChatCompletion(
            model=self.model,
            choices=[_choice(self.serving, c, self.tool_use, self.logprobs) for c in choices],
            usage=usage(len(self.prompt_ids), choices),
        )

    async def chunks(self, include_usage: bool = False) -> AsyncIterator[oa.ChatCompletionChunk]:
        """The answer as chat chunks, once the engine has taken the request (a refusal is an HTTP error)."""
        stream = await primed(self.serving.stream_choices(self.prompt_ids, self.params, self.n, self.adapter))
        return _chunks(self, stream, include_usage)


def validated_chat_request(fields: dict[str, Any]) -> oa.ChatCompletionRequest:
    """The chat request another API family made of its own; a 400 naming the first field chat's checks refuse, as
    for a chat body that fails them."""
    try:
        return oa.ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        message, param = errors.validation_message(exc)
        raise errors.APIError(400, message, param=param, code="invalid_value") from exc


async def chat_prompt(serving: Serving, req: oa.ChatCompletionRequest) -> tuple[list[int], ToolUse | None]:
    """The prompt's token ids (the tools described, earlier calls in the model's form) and the tool use; 4xx for
    an unknown model, a bad tool_choice or blocked words."""
    serving.check_model(req.model)
    tool_use = ToolUse.of(req)
    messages = render_history([m.model_dump(exclude_none=True) for m in req.messages])
    return await serving.chat_prompt_ids(*chat_messages(serving, messages, tool_use)), tool_use


async def prepare_chat(serving: Serving, req: oa.ChatCompletionRequest) -> ChatRun:
    """The request checked, its prompt built and its grammar compiled; 4xx naming what is wrong."""
    adapter = serving.check_model(req.model)
    prompt_ids, tool_use = await chat_prompt(serving, req)
    top = (req.top_logprobs or 0) if req.logprobs else None
    history_calls = any((m.model_extra or {}).get("tool_calls") for m in req.messages)
    structure = await serving.structure(req.response_format, tool_use, history_calls)
    params = serving.sampling_params(req, len(prompt_ids), top, structure)
    name = adapter or serving.model.name
    return ChatRun(serving, name, adapter, prompt_ids, params, tool_use, req.n, req.logprobs)


async def create_chat_completion(
    serving: Serving, req: oa.ChatCompletionRequest
) -> oa.ChatCompletion | AsyncIterator[str]:
    run = await prepare_chat(serving, req)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse_stream(await run.chunks(include_usage))
    return await run.complete()


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
        logprobs=chat_logprobs(serving.model.tokenizer, c.logprobs) if logprobs else None,
        finish_reason="tool_calls" if calls else c.finish_reason,
        closed_at_budget=c.closed,
        stop_reason=c.stop_reason,
    )


async def _chunks(run: ChatRun, stream, include_usage: bool) -> AsyncIterator[oa.ChatCompletionChunk]:
    serving, n, tool_use = run.serving, run.n, run.tool_use
    head = oa.ChatCompletionChunk(id=oa._id("chatcmpl"), created=now(), model=run.model, choices=[])
    choices = [Choice(i) for i in range(n)]

    def chunk(i: int, delta: oa.DeltaMessage, out=None, finish_reason: str | None = None) -> oa.ChatCompletionChunk:
        lps = chat_logprobs(serving.model.tokenizer, out.logprobs) if out is not None else None
        closed, stop = (choices[i].closed, choices[i].stop_reason) if finish_reason else (None, None)
        one = oa.ChatChunkChoice(
            index=i, delta=delta, logprobs=lps, finish_reason=finish_reason, closed_at_budget=closed, stop_reason=stop
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
        yield head.model_copy(update={"choices": [], "usage": usage(len(run.prompt_ids), choices)})


def _calls_end(chunk, i: int, c: Choice, calls: CallStream) -> oa.ChatCompletionChunk:
    """The last chunk of an answer streamed as calls: tool_calls when they were written whole; if the model wrote no
    call at all (it stopped early), its text as content, as the non-streamed answer has it."""
    if calls.calls == 0:
        return chunk(i, oa.DeltaMessage(content=c.text or None), finish_reason=c.finish_reason)
    return chunk(i, oa.DeltaMessage(), finish_reason="tool_calls" if c.finish_reason == "stop" else c.finish_reason)
