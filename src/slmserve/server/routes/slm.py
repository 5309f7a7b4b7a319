"""Seed 002's model lifecycle API: /slm/info, /slm/load, /slm/unload, /slm/generate, /slm/stream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmserve.server import errors, serving_seeds
from slmserve.server.app_state import get_app_state, get_state
from slmserve.server.protocol import seeds as sd
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(prefix="/slm", route_class=StrictJSONRoute)

GENERATES = seed_errors(*GUARDED, 413, 422)
# An adapter that is not there (404), a name taken or in use (409); 400 for files that are no adapter of the model.
LIFECYCLE = seed_errors(*GUARDED, 404, 409, 413, 422)


@router.get("/info", responses=seed_errors(*GUARDED))
async def info(request: Request) -> dict:
    state = get_state(request)
    model = state.model
    adapters = dict(model.adapters) if model else {}
    return {
        "model_loaded": state.serving is not None,
        "device": model.device if model else serving_seeds.DEVICE,
        "engine": model.backend if model else state.settings.engine,
        "base_model": state.settings.model_name,
        "model_path": model.source if model else None,
        "weights": model.weights if model else None,
        "lora_path": adapters.get(state.slm_adapter),
        "lora_name": state.slm_adapter,
        "adapters": adapters,
        # every served model's backend (llama.cpp or torch), for servers of several models
        "engines": {name: each.model.backend for name, each in get_app_state(request).models.items() if each.model},
        "cuda_available": bool(model and model.device.startswith("cuda")),
        "mps_available": False,
    }


@router.post("/load", responses=LIFECYCLE)
async def load(request: Request, req: sd.SlmLoadRequest | None = None) -> dict:
    """Load the base model; with lora_path, also that LoRA adapter, which /slm/generate and /slm/stream then use."""
    state = get_state(request)
    if req is not None and req.lora_path:
        name, loaded_now = await state.load_adapter(req.lora_path, req.lora_name)
        verb = "loaded successfully" if loaded_now else "already loaded"
        return {
            "success": True,
            "message": f"LoRA adapter {name!r} {verb} on {state.model.device}",
            "device": state.model.device,
            "model_path": state.model.adapters[name],
            "lora_name": name,
        }
    loaded_now = await state.load()
    verb = "loaded successfully" if loaded_now else "already loaded"
    return {
        "success": True,
        "message": f"Model {verb} on {state.model.device}",
        "device": state.model.device,
        "model_path": state.model.source,
    }


@router.post("/unload", responses=LIFECYCLE)
async def unload(request: Request, req: sd.SlmUnloadRequest | None = None) -> dict:
    """With lora_name, unload that adapter. Otherwise requests in flight finish first; then the model is freed."""
    state = get_state(request)
    if req is not None and req.lora_name is not None:
        await state.unload_adapter(req.lora_name)
        return {"success": True, "message": f"LoRA adapter {req.lora_name!r} unloaded"}
    if await state.unload():
        return {"success": True, "message": "Model unloaded successfully"}
    return {"success": False, "message": "No model is loaded"}


@router.post("/generate", responses=GENERATES)
async def generate(request: Request, req: sd.SlmGenerateRequest) -> dict:
    """Loads the model on demand when it is unloaded."""
    return await serving_seeds.slm_generate(get_state(request), req)


@router.post(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **GENERATES},
)
async def stream(request: Request, req: sd.SlmGenerateRequest) -> StreamingResponse:
    state = get_state(request)
    if state.content_filter.blocks(req.prompt):
        raise errors.blocked_content()
    return StreamingResponse(
        serving_seeds.slm_stream(state, req), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
