"""A chat answer's chunks as the Messages API's streamed events: message_start, ping, per content block
content_block_start, content_block_delta (text_delta | input_json_delta)..., content_block_stop, then message_delta
(stop reason, output tokens) and message_stop; an `error` event when the answer fails midway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from slmserve.server import errors
from slmserve.server.anthropic.protocol import Message, Usage
from slmserve.server.protocol import openai as oa
from slmserve.server.streams import event


def tool_use_id(call_id: str) -> str:
    """A chat call id in Anthropic's form (the id only pairs a call with its result)."""
    return f"toolu_{call_id.removeprefix('call_')}"


def stop_reason(finish_reason: str | None, stop: str | None) -> tuple[str, str | None]:
    """Chat's finish_reason (and the stop string that ended the answer) as Anthropic's stop_reason."""
    if finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if stop is not None:
        return "stop_sequence", stop
    return "end_turn", None


def _block_events(index: int, block: dict[str, Any] | None) -> list[str]:
    """The events that close block index-1 (if one is open) and open `block` as index (if given)."""
    out = [event("content_block_stop", {"type": "content_block_stop", "index": index - 1})] if index > 0 else []
    if block is not None:
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
    return out


async def stream_events(
    chunks: AsyncIterator[oa.ChatCompletionChunk], model: str, prompt_tokens: int
) -> AsyncIterator[str]:
    head = Message(model=model, usage=Usage(input_tokens=prompt_tokens, output_tokens=0))
    yield event("message_start", {"type": "message_start", "message": head.model_dump(mode="json")})
    yield event("ping", {"type": "ping"})
    blocks = 0  # content blocks opened
    kind = None  # the open block's type
    finish, stop, output_tokens = None, None, 0

    def delta(payload: dict[str, Any]) -> str:
        return event("content_block_delta", {"type": "content_block_delta", "index": blocks - 1, "delta": payload})

    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    if kind != "text":
                        for out in _block_events(blocks, {"type": "text", "text": ""}):
                            yield out
                        blocks, kind = blocks + 1, "text"
                    yield delta({"type": "text_delta", "text": choice.delta.content})
                for call in choice.delta.tool_calls or []:
                    if call.id is not None:
                        block = {
                            "type": "tool_use",
                            "id": tool_use_id(call.id),
                            "name": call.function.name,
                            "input": {},
                        }
                        for out in _block_events(blocks, block):
                            yield out
                        blocks, kind = blocks + 1, "tool_use"
                    if call.function.arguments:
                        yield delta({"type": "input_json_delta", "partial_json": call.function.arguments})
                if choice.finish_reason is not None:
                    finish, stop = choice.finish_reason, choice.stop_reason
        if blocks == 0:  # an empty answer is still one (empty) text block
            for out in _block_events(0, {"type": "text", "text": ""}):
                yield out
            blocks = 1
        for out in _block_events(blocks, None):
            yield out
        reason, sequence = stop_reason(finish, stop)
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": {"output_tokens": output_tokens},
            },
        )
        yield event("message_stop", {"type": "message_stop"})
    except Exception as exc:  # noqa: BLE001 - the client gets an error event
        refused = errors.of_exception(exc)
        yield event("error", errors.anthropic_body(refused.status, refused.message))
