"""Seeds 003 and 004: a validated /generate with the content filter, and /info."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from slmserve.server.app_state import get_serving, get_state
from slmserve.server.protocol.errors import GUARDED, seed_errors
from slmserve.server.seeds import protocol as sd
from slmserve.server.seeds import serving as seed_serving
from slmserve.server.serving import Serving
from slmserve.server.strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/generate", response_model=sd.GenerateResponse, responses=seed_errors(*GUARDED, 404, 413, 422))
async def generate(req: sd.GenerateRequest, serving: Serving = Depends(get_serving)) -> sd.GenerateResponse:
    return await seed_serving.generate(serving, req)


@router.get("/info", responses=seed_errors(*GUARDED))
async def info(request: Request) -> dict:
    return seed_serving.info(get_state(request))
