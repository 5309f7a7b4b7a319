"""A chat answer's chunks as the Responses API's streamed events, in OpenAI's order and with sequence numbers:
response.created, response.in_progress, then per output item output_item.added, (content_part.added,
output_text.delta..., output_text.done, content_part.done | function_call_arguments.delta..., .done),
output_item.done, and last response.completed, response.incomplete or (after an `error` event) response.failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import count
from typing import Any

from slmserve.server import errors
from slmserve.server.protocol import openai as oa
from slmserve.server.responses.output import settle, usage
from slmserve.server.responses.protocol import FunctionCall, OutputMessage, OutputText, Response, ResponseError
from slmserve.server.streams import event


class _Events:
    """The events of one response, numbered; and the output item now being written."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.numbers = count()
        self.open: OutputMessage | FunctionCall | None = None

    def __call__(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": next(self.numbers)}
        for name, value in fields.items():
            payload[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        return event(kind, payload)

    @property
    def index(self) -> int:
        return len(self.response.output) - 1

    def begin(self, item: OutputMessage | FunctionCall) -> list[str]:
        out = self.end()
        self.response.output.append(item)
        self.open = item
        out.append(self("response.output_item.added", output_index=self.index, item=item))
        if isinstance(item, OutputMessage):
            item.content.append(OutputText(text=""))
            part = {"item_id": item.id, "output_index": self.index, "content_index": 0}
            out.append(self("response.content_part.added", **part, part=OutputText(text="")))
        return out

    def text(self, delta: str) -> list[str]:
        out = [] if isinstance(self.open, OutputMessage) else self.begin(OutputMessage(status="in_progress"))
        self.open.content[0].text += delta
        part = {"item_id": self.open.id, "output_index": self.index, "content_index": 0}
        return [*out, self("response.output_text.delta", **part, delta=delta, logprobs=[])]

    def arguments(self, delta: str) -> list[str]:
        self.open.arguments += delta
        return [
            self("response.function_call_arguments.delta", item_id=self.open.id, output_index=self.index, delta=delta)
        ]

    def end(self, status: str = "completed") -> list[str]:
        """Close the item being written, if any."""
        item, self.open = self.open, None
        if item is None:
            return []
        item.status = status
        out = []
        if isinstance(item, OutputMessage):
            part = {"item_id": item.id, "output_index": self.index, "content_index": 0}
            text = item.content[0]
            out.append(self("response.output_text.done", **part, text=text.text, logprobs=[]))
            out.append(self("response.content_part.done", **part, part=text))
        else:
            out.append(
                self(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=self.index,
                    arguments=item.arguments,
                )
            )
        out.append(self("response.output_item.done", output_index=self.index, item=item))
        return out


async def stream_events(
    chunks: AsyncIterator[oa.ChatCompletionChunk], response: Response, keep: Callable[[Response], Awaitable[None]]
) -> AsyncIterator[str]:
    """The events; `keep` stores the finished (or failed) response."""
    events = _Events(response)
    yield events("response.created", response=response)
    yield events("response.in_progress", response=response)
    finish_reason, closed, used = None, False, None
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                used = usage(chunk.usage)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    for out in events.text(delta.content):
                        yield out
                for call in delta.tool_calls or []:
                    if call.id is not None:
                        item = FunctionCall(call_id=call.id, name=call.function.name or "", arguments="")
                        item.status = "in_progress"
                        for out in events.begin(item):
                            yield out
                    if call.function.arguments:
                        for out in events.arguments(call.function.arguments):
                            yield out
                if choice.finish_reason is not None:
                    finish_reason, closed = choice.finish_reason, bool(choice.closed_at_budget)
        status = "incomplete" if finish_reason == "length" else "completed"
        if not response.output:  # an answer with no text at all is still a message
            for out in events.begin(OutputMessage(status="in_progress")):
                yield out
        for out in events.end(status):
            yield out
        settle(response, status, used, closed)
        await keep(response)
        yield events(f"response.{status}", response=response)
    except Exception as exc:  # noqa: BLE001 - the client gets an error event and the failed response
        refused = errors.of_exception(exc)
        yield events("error", code=refused.code, message=refused.message, param=refused.param)
        response.status = "failed"
        response.error = ResponseError(code=refused.code or "server_error", message=refused.message)
        yield events("response.failed", response=response)
