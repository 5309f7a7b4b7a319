"""GET /health and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from slmserve.server.app_state import get_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded and the engine runs; 503 while loading, after a failure, or when unloaded."""
    state = get_state(request)
    device = state.model.device if state.model else "cpu"
    body = {"model": state.settings.model_name, "device": device.upper(), "cuda_available": device.startswith("cuda")}
    if state.status != "healthy":
        return JSONResponse({"status": state.status, "error": state.load_error, **body}, status_code=503)
    return JSONResponse({"status": state.status, **body})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
