"""The seed designs' endpoints on the shared engine: /infer, /chat, /chat/batched, /generate, /slm/*."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from pydantic import ValidationError

from slmserve import __version__
from slmserve.engine.scheduler import QueueFullError
from slmserve.server import errors
from slmserve.server.app_state import AppState, ModelState
from slmserve.server.seeds import protocol as sd
from slmserve.server.serving import Choice, Serving, usage
from slmserve.server.streams import sse

DEVICE = "cpu"


def seed_messages(system_prompt: str, user_prompt: str) -> list[dict]:
    """One user turn; no system prompt lets the template add its default."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user_prompt}]


async def answer(serving: Serving, req: sd.InferRequest) -> tuple[Choice, int]:
    """The assistant's answer to a /infer or /chat request, and the prompt's token count."""
    adapter = serving.check_model(req.model)
    ids = await serving.chat_prompt_ids(seed_messages(req.system_prompt, req.user_prompt))
    params = serving.build_params(
        len(ids),
        req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=req.seed,
        **req.dry_params(),
    )
    choice = (await serving.collect(ids, params, 1, adapter))[0]
    return choice, len(ids)


async def chat(serving: Serving, req: sd.ChatRequest) -> sd.ChatResponse:
    choice, prompt_tokens = await answer(serving, req)
    return sd.ChatResponse(chat_id=req.chat_id, response=choice.text, usage=usage(prompt_tokens, [choice]))


async def chat_batched(serving: Serving, req: sd.BatchedRequest) -> sd.BatchedResponse:
    """All queries go to the engine at once; each one that fails gets its own error, in query order."""

    async def one(query: dict) -> sd.BatchedResult:
        chat_id = str(query.get("chat_id")) if query.get("chat_id") is not None else None
        try:
            r = await chat(serving, sd.ChatRequest.model_validate(query))
            return sd.BatchedResult(chat_id=r.chat_id, response=r.response, usage=r.usage)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return sd.BatchedResult(chat_id=chat_id, error=problems, status=422)
        except errors.APIError as exc:
            return sd.BatchedResult(chat_id=chat_id, error=exc.message, status=exc.status)
        except QueueFullError:
            return sd.BatchedResult(chat_id=chat_id, error=errors.AT_CAPACITY, status=429)

    results = await asyncio.gather(*(one(q) for q in req.queries))
    return sd.BatchedResponse(responses=[r.response or "" for r in results], results=list(results))


async def generate(serving: Serving, req: sd.GenerateRequest) -> sd.GenerateResponse:
    """Seeds 003/004: continue the prompt as plain text; generated_text is prompt + continuation."""
    settings = serving.settings
    adapter = serving.check_model(req.model)
    serving.check_content(req.prompt)
    max_length = req.max_length or settings.default_max_length
    if max_length > settings.max_length_limit:
        raise errors.APIError(422, f"max_length must be at most {settings.max_length_limit}")
    temperature = settings.default_temperature if req.temperature is None else req.temperature
    ids = serving.model.tokenizer.encode(req.prompt, add_special=True)
    if len(ids) >= max_length:
        raise errors.APIError(
            400, f"The prompt is {len(ids)} tokens; max_length ({max_length}) counts the prompt and must exceed it."
        )
    start = time.perf_counter()
    params = serving.build_params(
        len(ids), max_length - len(ids), temperature=temperature if req.do_sample else 0.0, top_k=req.top_k,
        top_p=req.top_p, **req.dry_params(),
    )  # fmt: skip
    choice = (await serving.collect(ids, params, 1, adapter))[0]
    return sd.GenerateResponse(
        prompt=req.prompt,
        generated_text=req.prompt + choice.text,
        model_name=serving.model.name,
        inference_time_seconds=round(time.perf_counter() - start, 4),
        parameters={
            "max_length": max_length,
            "temperature": temperature,
            "top_k": req.top_k,
            "top_p": req.top_p,
            "do_sample": req.do_sample,
        },  # fmt: skip
        metadata={
            "model": serving.model.name,
            "device": serving.model.device.upper(),
            "prompt_tokens": len(ids),
            "completion_tokens": choice.num_tokens,
            "finish_reason": choice.finish_reason,
        },  # fmt: skip
    )


def slm_params(serving: Serving, req: sd.SlmGenerateRequest, prompt_len: int):
    temperature = req.temperature if req.do_sample else 0.0
    return serving.build_params(
        prompt_len, req.max_new_tokens, temperature=temperature, top_p=req.top_p, top_k=req.top_k, **req.dry_params()
    )


def slm_settings(req: sd.SlmGenerateRequest) -> dict:
    return {"max_new_tokens": req.max_new_tokens, "temperature": req.temperature, "do_sample": req.do_sample}


async def load_on_demand(state: ModelState) -> None:
    """Load for a route that loads when unloaded (/slm/generate, /slm/stream); 503 while an unload is under way,
    so such a request never undoes the unload it raced with."""
    if state.unloading:
        raise errors.APIError(
            503, "The model is being unloaded; POST /slm/load to load it again.", code="model_unloading"
        )
    await state.load()


async def slm_generate(state: ModelState, req: sd.SlmGenerateRequest, adapter: str | None) -> dict:
    """/slm/generate, with the adapter /slm/load chose (None: the base model)."""
    await load_on_demand(state)
    serving = state.serving
    if serving is None:
        raise state.not_ready()
    messages = seed_messages("", req.prompt)
    ids = await serving.chat_prompt_ids(messages)
    choice = (await serving.collect(ids, slm_params(serving, req, len(ids)), 1, adapter))[0]
    return {
        "success": True,
        "prompt": req.prompt,
        "response": choice.text,
        "full_response": serving.model.chat_template.render(messages) + choice.text,
        "device": serving.model.device,
        "settings": slm_settings(req),
    }


async def slm_stream(state: ModelState, req: sd.SlmGenerateRequest, adapter: str | None) -> AsyncIterator[str]:
    """Seed 002's event sequence: load status (when loading on demand), then pieces, then a final event."""
    try:
        if state.serving is None:
            yield sse({"status": "Loading SLM model..."})
            await load_on_demand(state)
            yield sse({"status": f"Model loaded on {state.model.device}"})
        serving = state.serving
        if serving is None:
            raise state.not_ready()
        ids = await serving.chat_prompt_ids(seed_messages("", req.prompt))
        params = slm_params(serving, req, len(ids))
        yield sse({"status": "Generating response..."})
        full = ""
        async for _, out in serving.stream_choices(ids, params, 1, adapter):
            if out.text:
                full += out.text
                yield sse({"text": out.text, "full_text": full, "is_complete": False})
        yield sse(
            {
                "status": "Response complete!",
                "device_used": serving.model.device,
                "full_text": full,
                "is_complete": True,
            }
        )
    except QueueFullError:
        yield sse({"status": "error", "error": errors.AT_CAPACITY, "is_complete": True})
    except (errors.APIError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, errors.APIError) else str(exc)
        yield sse({"status": "error", "error": message, "is_complete": True})


def info(state: ModelState) -> dict:
    """Seed 004's /info: the model, the device, the /generate limits and the parameters it takes."""
    s = state.settings
    return {
        "api_version": __version__,
        "model": s.model_name,
        "device": (state.model.device if state.model else DEVICE).upper(),
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


def slm_info(app: AppState, state: ModelState, adapter: str | None) -> dict:
    """Seed 002's /slm/info: whether the model is loaded, where, its adapters and the one /slm/load chose."""
    model = state.model
    adapters = dict(model.adapters) if model else {}
    return {
        "model_loaded": state.serving is not None,
        "device": model.device if model else DEVICE,
        "engine": model.backend if model else state.settings.engine,
        "base_model": state.settings.model_name,
        "model_path": model.source if model else None,
        "weights": model.weights if model else None,
        "lora_path": adapters.get(adapter),
        "lora_name": adapter,
        "adapters": adapters,
        # every served model's backend (llama.cpp or torch), for servers of several models
        "engines": {name: each.model.backend for name, each in app.models.items() if each.model},
        "cuda_available": bool(model and model.device.startswith("cuda")),
        "mps_available": False,
    }
