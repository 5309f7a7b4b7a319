"""The Responses API's routes: thin, the work lives in responses/serving.py."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from slmserve.server.app_state import get_app_state
from slmserve.server.protocol.errors import GUARDED, openai_errors
from slmserve.server.responses import serving
from slmserve.server.responses.protocol import Deleted, ItemList, Response, ResponsesRequest
from slmserve.server.strict_json import OpenAIRoute

router = APIRouter(route_class=OpenAIRoute)

STORED = openai_errors(*GUARDED, 404)


@router.post(
    "/v1/responses",
    response_model=None,
    responses={200: {"model": Response, "content": {"text/event-stream": {}}}, **openai_errors(*GUARDED, 404, 413)},
)
async def create_response(req: ResponsesRequest, request: Request):
    """A model response; with stream: true, its events (response.created ... response.completed)."""
    state = get_app_state(request)
    result = await serving.create_response(state.serving_for, state.responses, req)
    if isinstance(result, Response):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/responses/{response_id}", response_model=Response, responses=STORED)
async def retrieve_response(response_id: str, request: Request) -> Response:
    return await serving.retrieve(get_app_state(request).responses, response_id)


@router.delete("/v1/responses/{response_id}", response_model=Deleted, responses=STORED)
async def delete_response(response_id: str, request: Request) -> Deleted:
    await serving.delete(get_app_state(request).responses, response_id)
    return Deleted(id=response_id)


@router.get("/v1/responses/{response_id}/input_items", response_model=ItemList, responses=STORED)
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
) -> ItemList:
    """The items the response was made from, its predecessors' (by previous_response_id) included."""
    store = get_app_state(request).responses
    return await serving.input_items(store, response_id, limit, order, after, before)
