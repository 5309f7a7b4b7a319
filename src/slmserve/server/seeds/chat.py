"""Seed 000 (model host + gateway) and seed 001's chat routes, on the shared engine (seed 001's /chat/completions
is an OpenAI route: routes/openai.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from slmserve.server.app_state import get_serving, get_state
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.seeds import protocol as sd
from slmserve.server.seeds import serving as seed_serving
from slmserve.server.serving import Serving
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute)

GENERATES = seed_errors(*GUARDED, 413, 422)


@router.get("/", responses=seed_errors())
async def root(request: Request) -> dict:
    """A health check for API clients (seed 000's GET /)."""
    state = get_state(request)
    return {"status": "healthy" if state.serving else "unavailable", "model": state.settings.model_name, "ui": "/ui"}


@router.post("/infer", response_model=sd.InferResponse, responses=GENERATES)
async def infer(req: sd.InferRequest, serving: Serving = Depends(get_serving)) -> sd.InferResponse:
    """The assistant's answer only (the seed echoed the whole prompt back; this does not)."""
    choice, _ = await seed_serving.answer(serving, req)
    return sd.InferResponse(response=choice.text)


@router.post("/chat", response_model=sd.ChatResponse, responses=GENERATES)
async def chat(req: sd.ChatRequest, serving: Serving = Depends(get_serving)) -> sd.ChatResponse:
    return await seed_serving.chat(serving, req)


@router.post("/chat/batched", response_model=sd.BatchedResponse, responses=GENERATES)
async def chat_batched(req: sd.BatchedRequest, serving: Serving = Depends(get_serving)) -> sd.BatchedResponse:
    return await seed_serving.chat_batched(serving, req)
