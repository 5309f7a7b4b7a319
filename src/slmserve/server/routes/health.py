"""GET /health and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from slmserve.server.app_state import get_app_state, get_state
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute)


@router.get(
    "/health",
    responses={
        503: {
            "description": "Not ready: a model loads, failed to load or was unloaded, or the server drains.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **seed_errors(),
    },
)
async def health(request: Request) -> JSONResponse:
    """200 once every model is loaded and its engine runs; 503 while one loads, after a failure, when unloaded, or
    while the server drains to stop.
    `model` is the default model; with several, `models` gives each one's status."""
    app_state = get_app_state(request)
    state = app_state.default
    device = state.model.device if state.model else "cpu"
    body = {"model": state.name, "device": device.upper(), "cuda_available": device.startswith("cuda")}
    if len(app_state.models) > 1:
        body["models"] = {name: m.status for name, m in app_state.models.items()}
    if app_state.drain.draining:
        return JSONResponse({"status": "draining", **body}, status_code=503, headers={"Retry-After": "1"})
    unready = next((m for m in app_state.models.values() if m.status != "healthy"), None)
    if unready is not None:
        return JSONResponse({"status": unready.status, "error": unready.load_error, **body}, status_code=503)
    return JSONResponse({"status": "healthy", **body})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **seed_errors(*GUARDED)},
)
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
