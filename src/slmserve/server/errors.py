"""Every error the API returns, in one place.

OpenAI routes (/v1/..., /chat/completions) answer in OpenAI's shape {"error": {message, type, param, code}}, with
400 for invalid input; the seeds' routes answer as FastAPI does, {"detail": ...}, with 422 for invalid input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from slmserve.engine.async_engine import EngineDeadError, EngineStepError
from slmserve.engine.engine import UnknownAdapterError
from slmserve.engine.scheduler import QueueFullError
from slmserve.engine.structured import GrammarError
from slmserve.server import content_filter
from slmserve.server.store import StoreError

log = logging.getLogger(__name__)

AT_CAPACITY = "The server is at capacity; retry shortly."

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "server_error",
}


class APIError(Exception):
    """An error to send to the client as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.message, exc.param, exc.code), status_code=exc.status, headers=exc.headers
    )


def model_not_found(name: str, available: list[str]) -> APIError:
    return APIError(
        404,
        f"The model '{name}' does not exist; available: {', '.join(available)}",
        param="model",
        code="model_not_found",
    )


def context_too_long(prompt_tokens: int, max_tokens: int, limit: int) -> APIError:
    if prompt_tokens >= limit:
        message = f"The prompt has {prompt_tokens} tokens; this model's context holds at most {limit} tokens."
    else:
        message = (
            f"The prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is {prompt_tokens + max_tokens} "
            f"tokens; this model's context holds at most {limit}. Shorten the prompt or lower max_tokens."
        )
    message += (
        " The server gives each request --ctx-size / --max-running tokens: start it with a larger --ctx-size, "
        "fewer --max-running slots, or --kv-unified (one shared buffer) for longer requests."
    )
    return APIError(400, message, param="messages", code="context_length_exceeded")


def queue_full(retry_after: int) -> APIError:
    return APIError(
        429,
        AT_CAPACITY,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def rate_limited(kind: str, limit: int, wait: float) -> APIError:
    """429 for a client past its requests- or tokens-a-minute limit, with the seconds until it may go on."""
    return APIError(
        429,
        f"Rate limit reached for {kind}: {limit} a minute for this API key. Retry in {wait:.1f} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def timed_out(timeout: float) -> APIError:
    """504 for a request aborted at its deadline (--request-timeout or its x-request-timeout header)."""
    return APIError(
        504,
        f"The request ran past its deadline of {timeout:g} s and was stopped; raise x-request-timeout "
        "(up to the server's --request-timeout) or lower max_tokens.",
        code="timeout",
    )


def invalid_grammar(reason: str, param: str = "response_format") -> APIError:
    """A response_format (or the tools' parameters) that no grammar can be made of."""
    return APIError(400, f"{param} cannot be followed: {reason}", param=param, code="invalid_grammar")


def budget_too_small(max_tokens: int, smallest: int, param: str) -> APIError:
    """A max_tokens below the structured answer's smallest valid one: no answer could end valid."""
    message = (
        f"max_tokens ({max_tokens}) is too small for this {param}: its smallest valid answer takes {smallest} "
        f"tokens. Raise max_tokens to at least {smallest}."
    )
    return APIError(400, message, param="max_tokens", code="max_tokens_too_small")


def blocked_content() -> APIError:
    return APIError(400, content_filter.REFUSAL, code="content_filter")


def not_ready(status: str, load_error: str | None = None) -> APIError:
    """503 saying why no model serves: loading (retry soon), load failed (the reason), or unloaded."""
    if status == "loading":
        return APIError(503, "The model is still loading.", code="model_loading", headers={"Retry-After": "1"})
    if status == "error":
        return APIError(503, f"The model could not be loaded: {load_error}", code="model_load_failed")
    return APIError(503, "No model is loaded: it was unloaded. POST /slm/load loads it again.", code="model_unloaded")


def validation_message(exc: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    """The first problem pydantic found, as a message and the field it names."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error")
        return (
            f"The request body is not valid JSON: {reason}." if reason else "The request body is not valid JSON.",
            None,
        )
    where = ".".join(loc)
    return (f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "invalid request")), (
        where or None
    )


def of_exception(exc: BaseException, retry_after: int = 1) -> APIError:
    """The one table: what an exception from serving or the engine means to a client, the same whether the request
    streams or not. Anything not in it is a fault of ours: a logged 500."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return queue_full(retry_after)
    if isinstance(exc, GrammarError):
        return invalid_grammar(str(exc))
    if isinstance(exc, UnknownAdapterError):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, EngineDeadError):
        return APIError(503, str(exc), code="engine_dead")
    if isinstance(exc, StoreError):
        return APIError(503, f"Stored responses are unavailable: {exc}", code="store_unavailable")
    if isinstance(exc, EngineStepError):
        return APIError(500, str(exc), code="generation_failed")
    if isinstance(exc, RuntimeError):
        return APIError(503, str(exc), code="engine_error")
    log.error("a request failed", exc_info=exc)
    return APIError(500, "The server failed while answering this request.", code="internal_error")


def family(request: Request) -> str:
    """ "anthropic", "openai" or "seeds": whose error shape a request is answered in, its route's (each router's
    route class names its family, strict_json.py). A refusal before routing (a middleware's) looks the route up;
    a path no route serves gets OpenAI's shape under /v1/, FastAPI's elsewhere."""
    route = request.scope.get("route") or _route_of(request.scope)
    if route is not None:
        return getattr(route, "family", "seeds")
    return "openai" if request.url.path.startswith("/v1/") else "seeds"


def _route_of(scope: dict):
    """The route the app would serve this request with (a route of another method if none of its own), or None."""
    other = None
    for route in routes_of(getattr(scope.get("app"), "router", None)):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        other = other or (route if match == Match.PARTIAL else None)
    return other


def routes_of(router) -> Iterator:
    """Every route of a router, those of the routers it includes too (FastAPI keeps an included router whole)."""
    for route in getattr(router, "routes", ()):
        inner = getattr(route, "original_router", None)
        yield from routes_of(inner) if inner is not None else (route,)


# Anthropic's error types by status (its API reference, "Errors").
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_body(status: int, message: str) -> dict:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def respond(request: Request, exc: APIError) -> JSONResponse:
    """The error in the shape of the route it happened on."""
    shape = family(request)
    if shape == "openai":
        return error_response(exc)
    if shape == "anthropic":
        return JSONResponse(anthropic_body(exc.status, exc.message), status_code=exc.status, headers=exc.headers)
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)


def install_handlers(app: FastAPI, retry_after: int) -> None:
    """Map every exception a route can raise onto a 4xx/503 in the route's shape: bad input is never a 500."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if family(request) == "seeds":
            return await request_validation_exception_handler(request, exc)
        message, param = validation_message(exc)
        return respond(request, APIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return respond(request, APIError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, of_exception(exc, retry_after))

    mapped = (APIError, QueueFullError, UnknownAdapterError, GrammarError, StoreError, RuntimeError)
    for kind in mapped:  # RuntimeError covers EngineDeadError and EngineStepError
        app.add_exception_handler(kind, _mapped)
    # Anything else is a bug of ours: still a 500 in the route's shape (Starlette then logs the traceback).
    app.add_exception_handler(Exception, _mapped)


def body_too_large(limit: int, size: int | None = None) -> APIError:
    """413 for a request body over --max-body-bytes; size is the declared length, None for a chunked body."""
    what = f"The request body is {size} bytes, over" if size is not None else "The request body is over"
    return APIError(413, f"{what} the limit of {limit} bytes (--max-body-bytes).")
