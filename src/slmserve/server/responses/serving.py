"""POST /v1/responses and the stored responses: a Responses request is made a chat request (same prompt, grammar,
admission, limits and engine), its answer made a response object or Responses events, and kept in the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from slmserve.server import errors
from slmserve.server.protocol import openai as oa
from slmserve.server.responses import items
from slmserve.server.responses.events import stream_events
from slmserve.server.responses.output import finish
from slmserve.server.responses.protocol import ItemList, Response, ResponsesRequest
from slmserve.server.serving_chat import prepare_chat, validated_chat_request
from slmserve.server.store import ResponseStore

# Extras a Responses request may carry that chat completions take as they are (sampling, the guards, DRY).
PASSED_ON = set(oa.SamplingFields.model_fields) - {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "response_format",
    "user",
}
# Parts of the Responses API slmserve does not have: refused by name rather than silently ignored.
NOT_SERVED = {"background": "background responses", "conversation": "conversations", "prompt": "prompt templates"}


def not_found(response_id: str, param: str | None = None) -> errors.APIError:
    return errors.APIError(404, f"Response with id '{response_id}' not found.", param=param, code="not_found")


async def create_response(serving_for, store: ResponseStore, req: ResponsesRequest) -> Response | AsyncIterator[str]:
    """The response (or its events with stream: true); stored unless store is false."""
    previous = None
    if req.previous_response_id is not None:
        previous = await store.get(req.previous_response_id)
        if previous is None:
            raise not_found(req.previous_response_id, "previous_response_id")
    new = items.input_items(req.input)
    context = (previous["items"] + previous["response"]["output"] if previous else []) + new
    if not context:
        raise errors.APIError(400, "input must hold at least one item", param="input", code="invalid_value")
    run = await prepare_chat(serving_for(req.model), _chat_request(req, context))
    response = Response(
        model=run.model,
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        store=req.store,
        temperature=req.temperature if req.temperature is not None else 1.0,
        text={
            "format": (req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text else {"type": "text"})
        },
        tool_choice=req.tool_choice or "auto",
        tools=req.tools or [],
        top_p=req.top_p if req.top_p is not None else 1.0,
        user=req.user,
        metadata=req.metadata or {},
    )

    async def keep(done: Response) -> None:
        if req.store:
            await store.put(done.id, {"response": done.model_dump(mode="json"), "items": context})

    if req.stream:
        return stream_events(await run.chunks(include_usage=True), response, keep)
    finish(response, await run.complete())
    await keep(response)
    return response


def _chat_request(req: ResponsesRequest, context: list[dict[str, Any]]) -> oa.ChatCompletionRequest:
    """The chat request the Responses request amounts to; 400 naming a field chat's checks refuse."""
    extras = req.extras()
    for name, what in NOT_SERVED.items():
        if extras.get(name):
            raise errors.APIError(400, f"{name}: {what} are not served by slmserve", param=name, code="invalid_value")
    fields: dict[str, Any] = {k: v for k, v in extras.items() if k in PASSED_ON}
    fields |= {
        "model": req.model,
        "messages": items.chat_messages(req.instructions, context),
        "max_tokens": req.max_output_tokens,
        "tools": items.chat_tools(req.tools),
        "tool_choice": items.chat_tool_choice(req.tool_choice),
        "response_format": items.response_format(req.text.format if req.text else None),
        "user": req.user,
    }
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        if (value := getattr(req, name)) is not None:
            fields[name] = value
    return validated_chat_request(fields)


async def retrieve(store: ResponseStore, response_id: str) -> Response:
    record = await store.get(response_id)
    if record is None:
        raise not_found(response_id)
    return Response.model_validate(record["response"])


async def delete(store: ResponseStore, response_id: str) -> None:
    if not await store.delete(response_id):
        raise not_found(response_id)


async def input_items(
    store: ResponseStore, response_id: str, limit: int, order: str, after: str | None, before: str | None
) -> ItemList:
    """A page of the items the response was made from (its predecessors' included), newest first by default."""
    record = await store.get(response_id)
    if record is None:
        raise not_found(response_id)
    data = record["items"] if order == "asc" else record["items"][::-1]
    ids = [item["id"] for item in data]
    for cursor, param in ((after, "after"), (before, "before")):
        if cursor is not None and cursor not in ids:
            raise errors.APIError(400, f"{param}: no item {cursor!r} in this response", param=param)
    if after is not None:
        data = data[ids.index(after) + 1 :]
    if before is not None:
        rest = [item["id"] for item in data]
        data = data[: rest.index(before)] if before in rest else []
    page = data[:limit]
    return ItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(data) > limit,
    )
