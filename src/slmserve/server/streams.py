"""Async streams of a response: merging choices, waiting for the engine to take a request before the headers,
and rendering chunks as server-sent events that always end, with an error event when something fails midway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import BaseModel

from slmserve.server import errors

T = TypeVar("T")


def sse(payload: BaseModel | dict | str) -> str:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump_json(exclude_none=True)
    elif isinstance(payload, dict):
        payload = json.dumps(payload)
    return f"data: {payload}\n\n"


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async streams as they arrive, tagged with the stream's index; closing it closes all."""
    if len(streams) == 1:
        async for out in streams[0]:
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, T] | BaseException | None] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[T]) -> None:
        try:
            async for out in stream:
                queue.put_nowait((i, out))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()  # a consumer that stops early aborts every choice
        await asyncio.gather(*tasks, return_exceptions=True)


async def primed(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """The stream with its first item already awaited: an engine's `accepted` output, given once it has taken the
    request. So a streamed response starts only after that, and a refusal (a full queue: 429) or a dead engine is
    an HTTP error with its status, not an SSE event after a 200; and a cluster knows which replica serves it
    before the headers go out."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[T]:
        if first is None:
            return
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return rest()


async def sse_stream(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[str]:
    """Render chunks as SSE, ending with [DONE]; an error after the headers went out becomes an error event."""
    try:
        async for chunk in chunks:
            yield sse(chunk)
    except Exception as exc:  # noqa: BLE001 - the client still gets an error event and the end of the stream
        refused = errors.of_exception(exc)
        yield sse(errors.error_body(refused.status, refused.message, refused.param, refused.code))
    yield "data: [DONE]\n\n"


def event(name: str, payload: BaseModel | dict) -> str:
    """One named server-sent event, as the Responses and Messages APIs send them."""
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"event: {name}\ndata: {data}\n\n"
