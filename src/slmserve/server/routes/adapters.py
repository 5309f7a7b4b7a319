"""vLLM's runtime LoRA routes, on the default model: load an adapter that requests then pick with model=NAME."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from slmserve.server.app_state import AppState, get_app_state
from slmserve.server.protocol import adapters as pa
from slmserve.server.protocol.errors import GUARDED, openai_errors
from slmserve.server.strict_json import OpenAIRoute

router = APIRouter(route_class=OpenAIRoute)

# vLLM answers in plain text; errors are JSON: not an adapter of this model (400), no such path or name (404), a
# name taken or in use (409).
CHANGES = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **openai_errors(*GUARDED, 404, 409, 413)}


@router.post("/v1/load_lora_adapter", response_model=None, responses=CHANGES)
async def load_lora_adapter(
    req: pa.LoadLoRAAdapterRequest, state: AppState = Depends(get_app_state)
) -> PlainTextResponse:
    """Load a LoRA adapter between two engine steps (requests in flight go on); vLLM's answer text."""
    name, _ = await state.default.load_adapter(req.lora_path, req.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_model=None, responses=CHANGES)
async def unload_lora_adapter(
    req: pa.UnloadLoRAAdapterRequest, state: AppState = Depends(get_app_state)
) -> PlainTextResponse:
    """Unload an adapter no request is using (409 while some are)."""
    await state.default.unload_adapter(req.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")
