"""Seed 002's model lifecycle API: /slm/info, /slm/load, /slm/unload, /slm/generate, /slm/stream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmserve.server import errors
from slmserve.server.app_state import ModelState, get_app_state, get_state
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.seeds import protocol as sd
from slmserve.server.seeds import serving as seed_serving
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(prefix="/slm", route_class=StrictJSONRoute)

GENERATES = seed_errors(*GUARDED, 413, 422)
# An adapter that is not there (404), a name taken or in use (409); 400 for files that are no adapter of the model.
LIFECYCLE = seed_errors(*GUARDED, 404, 409, 413, 422)


def _chosen(request: Request) -> dict[str, str]:
    """The adapter /slm/load chose last, by model: seed 002's state, kept here, not in the model's."""
    if not hasattr(request.app.state, "slm_adapters"):
        request.app.state.slm_adapters = {}
    return request.app.state.slm_adapters


def current_adapter(request: Request, state: ModelState) -> str | None:
    """The adapter /slm/generate and /slm/stream answer with: /slm/load's last, while it is still loaded."""
    name = _chosen(request).get(state.name)
    return name if state.model is not None and name in state.model.adapters else None


@router.get("/info", responses=seed_errors(*GUARDED))
async def info(request: Request) -> dict:
    state = get_state(request)
    return seed_serving.slm_info(get_app_state(request), state, current_adapter(request, state))


@router.post("/load", responses=LIFECYCLE)
async def load(request: Request, req: sd.SlmLoadRequest | None = None) -> dict:
    """Load the base model; with lora_path, also that LoRA adapter, which /slm/generate and /slm/stream then use."""
    state = get_state(request)
    if req is not None and req.lora_path:
        name, loaded_now = await state.load_adapter(req.lora_path, req.lora_name)
        _chosen(request)[state.name] = name
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
    _chosen(request).pop(state.name, None)
    if await state.unload():
        return {"success": True, "message": "Model unloaded successfully"}
    return {"success": False, "message": "No model is loaded"}


@router.post("/generate", responses=GENERATES)
async def generate(request: Request, req: sd.SlmGenerateRequest) -> dict:
    """Loads the model on demand when it is unloaded."""
    state = get_state(request)
    return await seed_serving.slm_generate(state, req, current_adapter(request, state))


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
        seed_serving.slm_stream(state, req, current_adapter(request, state)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )
