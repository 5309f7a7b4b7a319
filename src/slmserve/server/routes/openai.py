"""The OpenAI API routes: thin, the work lives in serving_chat / serving_completion."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from slmserve.server import serving_tokens
from slmserve.server.app_state import get_serving
from slmserve.server.protocol import embeddings as pe
from slmserve.server.protocol import openai as oa
from slmserve.server.serving import Serving
from slmserve.server.serving_chat import create_chat_completion
from slmserve.server.serving_completion import create_completion

router = APIRouter()


def _respond(result):
    if isinstance(result, oa.BaseModel):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/models", response_model=oa.ModelList)
async def list_models(serving: Serving = Depends(get_serving)) -> oa.ModelList:
    model = serving.model
    cards = [oa.ModelCard(id=model.name, max_model_len=model.max_model_len, weights=model.weights)]
    cards += [oa.ModelCard(id=name, parent=model.name, max_model_len=model.max_model_len) for name in model.adapters]
    return oa.ModelList(data=cards)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(req: oa.ChatCompletionRequest, serving: Serving = Depends(get_serving)):
    return _respond(await create_chat_completion(serving, req))


@router.post("/v1/completions", response_model=None)
async def completions(req: oa.CompletionRequest, serving: Serving = Depends(get_serving)):
    return _respond(await create_completion(serving, req))


@router.post("/v1/embeddings", response_model=pe.EmbeddingResponse)
async def embeddings(req: pe.EmbeddingRequest, serving: Serving = Depends(get_serving)) -> pe.EmbeddingResponse:
    return await serving_tokens.create_embedding(serving, req)


# vLLM's paths (no /v1), and its shapes.
@router.post("/tokenize", response_model=pe.TokenizeResponse, response_model_exclude_none=True)
async def tokenize(req: pe.TokenizeRequest, serving: Serving = Depends(get_serving)) -> pe.TokenizeResponse:
    return serving_tokens.tokenize(serving, req)


@router.post("/detokenize", response_model=pe.DetokenizeResponse)
async def detokenize(req: pe.DetokenizeRequest, serving: Serving = Depends(get_serving)) -> pe.DetokenizeResponse:
    return serving_tokens.detokenize(serving, req)
