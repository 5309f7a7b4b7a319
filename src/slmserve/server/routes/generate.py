"""Seeds 003 and 004: a validated /generate with the content filter, and /info."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from slmserve import __version__
from slmserve.server import serving_seeds
from slmserve.server.app_state import get_serving, get_state
from slmserve.server.protocol import seeds as sd
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.serving import Serving
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/generate", response_model=sd.GenerateResponse, responses=seed_errors(*GUARDED, 404, 413, 422))
async def generate(req: sd.GenerateRequest, serving: Serving = Depends(get_serving)) -> sd.GenerateResponse:
    return await serving_seeds.generate(serving, req)


@router.get("/info", responses=seed_errors(*GUARDED))
async def info(request: Request) -> dict:
    state = get_state(request)
    s = state.settings
    return {
        "api_version": __version__,
        "model": s.model_name,
        "device": (state.model.device if state.model else serving_seeds.DEVICE).upper(),
        "max_length_limit": s.max_length_limit,
        "default_max_length": s.default_max_length,
        "default_temperature": s.default_temperature,
        "supported_parameters": {
            "prompt": {"type": "string", "min_length": 1, "max_length": 500},
            "max_length": {"type": "integer", "min": 10, "max": s.max_length_limit, "default": s.default_max_length},
            "temperature": {"type": "number", "min": 0.0, "max": 2.0, "default": s.default_temperature},
            "top_k": {"type": "integer", "min": 0, "default": 50},
            "top_p": {"type": "number", "min": 0.0, "max": 1.0, "default": 1.0},
            "do_sample": {"type": "boolean", "default": True},
        },
    }
