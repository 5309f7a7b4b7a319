"""Seed 002's model lifecycle API: /slm/info, /slm/load, /slm/unload, /slm/generate, /slm/stream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmserve.server import errors, serving_seeds
from slmserve.server.app_state import get_state
from slmserve.server.protocol import seeds as sd

router = APIRouter(prefix="/slm")


@router.get("/info")
async def info(request: Request) -> dict:
    state = get_state(request)
    return {
        "model_loaded": state.serving is not None,
        "device": serving_seeds.DEVICE,
        "base_model": state.settings.model_name,
        "model_path": str(state.model.path) if state.model else None,
        "lora_path": None,
        "cuda_available": False,
        "mps_available": False,
    }


@router.post("/load")
async def load(request: Request, req: sd.SlmLoadRequest | None = None) -> dict:
    state = get_state(request)
    if req is not None and req.lora_path:
        raise errors.APIError(400, "LoRA adapters are not supported by the llama.cpp engine yet (see issue #4)")
    loaded_now = await state.load()
    verb = "loaded successfully" if loaded_now else "already loaded"
    return {
        "success": True,
        "message": f"Model {verb} on {serving_seeds.DEVICE}",
        "device": serving_seeds.DEVICE,
        "model_path": str(state.model.path),
    }


@router.post("/unload")
async def unload(request: Request) -> dict:
    """Requests in flight finish first; then the model's memory is freed."""
    if await get_state(request).unload():
        return {"success": True, "message": "Model unloaded successfully"}
    return {"success": False, "message": "No model is loaded"}


@router.post("/generate")
async def generate(request: Request, req: sd.SlmGenerateRequest) -> dict:
    """Loads the model on demand when it is unloaded."""
    return await serving_seeds.slm_generate(get_state(request), req)


@router.post("/stream")
async def stream(request: Request, req: sd.SlmGenerateRequest) -> StreamingResponse:
    state = get_state(request)
    if state.content_filter.blocks(req.prompt):
        raise errors.blocked_content()
    return StreamingResponse(
        serving_seeds.slm_stream(state, req), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
