"""GET /health and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from slmserve.server.app_state import get_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded and the engine runs; 503 while loading or after a load failure."""
    state = get_state(request)
    if state.serving is None:
        status = "error" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
    return JSONResponse({"status": "ok", "model": state.model.name})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
