"""The Messages API's routes: thin, the work lives in anthropic/serving.py. Errors answer in Anthropic's shape
({"type": "error", "error": {"type", "message"}}); the key may come as x-api-key or a Bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmserve.server.anthropic import serving
from slmserve.server.anthropic.protocol import CountTokensRequest, Message, MessagesRequest, TokenCount
from slmserve.server.app_state import get_app_state
from slmserve.server.protocol.errors import GUARDED, anthropic_errors
from slmserve.server.strict_json import AnthropicRoute

router = APIRouter(route_class=AnthropicRoute)

TAKES_MODEL = anthropic_errors(*GUARDED, 404, 413)


@router.post(
    "/v1/messages",
    response_model=None,
    responses={200: {"model": Message, "content": {"text/event-stream": {}}}, **TAKES_MODEL},
)
async def create_message(req: MessagesRequest, request: Request):
    """A message; with stream: true, its events (message_start ... message_stop)."""
    result = await serving.create_message(get_app_state(request).serving_for(req.model), req)
    if isinstance(result, Message):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/messages/count_tokens", response_model=TokenCount, responses=TAKES_MODEL)
async def count_tokens(req: CountTokensRequest, request: Request) -> TokenCount:
    return await serving.count_tokens(get_app_state(request).serving_for(req.model), req)
