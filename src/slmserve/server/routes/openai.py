"""The OpenAI API routes: thin, the work lives in serving_chat / serving_completion."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from slmserve.server import serving_tokens
from slmserve.server.app_state import AppState, get_app_state
from slmserve.server.protocol import embeddings as pe
from slmserve.server.protocol import openai as oa
from slmserve.server.protocol.errors import GUARDED, openai_errors
from slmserve.server.serving_chat import create_chat_completion
from slmserve.server.serving_completion import create_completion
from slmserve.server.strict_json import OpenAIRoute

router = APIRouter(route_class=OpenAIRoute)

# Routes with a body naming a model: a wrong name is a 404, a body too large a 413.
TAKES_MODEL = openai_errors(*GUARDED, 404, 413)


def generation_responses(completion: type[oa.BaseModel]) -> dict:
    """`responses=` of a generating route: the completion as JSON, or SSE chunks with stream: true."""
    return {200: {"model": completion, "content": {"text/event-stream": {}}}, **TAKES_MODEL}


def _respond(result):
    if isinstance(result, oa.BaseModel):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/models", response_model=oa.ModelList, responses=openai_errors(*GUARDED))
async def list_models(state: AppState = Depends(get_app_state)) -> oa.ModelList:
    """Every loaded model, the default first, each followed by its LoRA adapters."""
    cards = []
    for each in state.models.values():
        if each.serving is None:  # loading, failed or unloaded: not servable now
            continue
        model = each.serving.model
        cards.append(oa.ModelCard(id=model.name, max_model_len=model.max_model_len, weights=model.weights))
        cards += [oa.ModelCard(id=a, parent=model.name, max_model_len=model.max_model_len) for a in model.adapters]
    if not cards:
        raise state.default.not_ready()
    return oa.ModelList(data=cards)


@router.post("/v1/chat/completions", response_model=None, responses=generation_responses(oa.ChatCompletion))
async def chat_completions(req: oa.ChatCompletionRequest, request: Request):
    return _respond(await create_chat_completion(get_app_state(request).serving_for(req.model), req))


@router.post("/chat/completions", response_model=None, responses=generation_responses(oa.ChatCompletion))
async def chat_completions_alias(req: oa.ChatCompletionRequest, request: Request):
    """Seed 001's path for the OpenAI chat completion; `model` may be omitted."""
    return await chat_completions(req, request)


@router.post("/v1/completions", response_model=None, responses=generation_responses(oa.Completion))
async def completions(req: oa.CompletionRequest, request: Request):
    return _respond(await create_completion(get_app_state(request).serving_for(req.model), req))


@router.post("/v1/embeddings", response_model=pe.EmbeddingResponse, responses=TAKES_MODEL)
async def embeddings(req: pe.EmbeddingRequest, request: Request) -> pe.EmbeddingResponse:
    return await serving_tokens.create_embedding(get_app_state(request).serving_for(req.model), req)


# vLLM's paths (no /v1), and its shapes.
@router.post("/tokenize", response_model=pe.TokenizeResponse, response_model_exclude_none=True, responses=TAKES_MODEL)
async def tokenize(req: pe.TokenizeRequest, request: Request) -> pe.TokenizeResponse:
    return await serving_tokens.tokenize(get_app_state(request).serving_for(req.model), req)


@router.post("/detokenize", response_model=pe.DetokenizeResponse, responses=TAKES_MODEL)
async def detokenize(req: pe.DetokenizeRequest, request: Request) -> pe.DetokenizeResponse:
    return await serving_tokens.detokenize(get_app_state(request).serving_for(req.model), req)
