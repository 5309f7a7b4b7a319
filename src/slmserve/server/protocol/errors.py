"""Error bodies as the API sends them (server/errors.py makes them), for the OpenAPI document's `responses=`.

OpenAI's routes answer {"error": {message, type, param, code}} for every error, invalid input included (400, never
422); the seeds' routes answer FastAPI's {"detail": ...}, a list of problems for a body that fails its schema (422).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# What the middleware may answer on any route that is not public: a bad x-request-timeout header (400), no valid
# API key (401), a rate limit (429), a server draining to stop (503), a request past its deadline (504).
GUARDED = (400, 401, 429, 503, 504)

DESCRIPTIONS = {
    400: "Invalid input: a value out of range, a prompt that does not fit the context, a blocked word, a bad header.",
    401: "The server asks for API keys (--api-keys) and the request sends none, or a wrong one.",
    404: "No model or LoRA adapter of the name the request gives.",
    409: "A LoRA adapter name that is taken, or an adapter requests still use.",
    413: "The body is larger than --max-body-bytes.",
    422: "The body does not match the request schema (a list of problems), or a value past a server limit.",
    429: "At capacity (the waiting queue is full) or past a rate limit; Retry-After says when to retry.",
    503: "No model serves now (loading, failed to load, unloaded), or the server is draining to stop.",
    504: "The request ran past --request-timeout or its x-request-timeout header.",
}


class ErrorInfo(BaseModel):
    message: str
    type: str  # invalid_request_error, not_found_error, rate_limit_error, server_error
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: /v1/*, /chat/completions, /tokenize, /detokenize."""

    error: ErrorInfo


class AnthropicErrorInfo(BaseModel):
    type: str  # invalid_request_error, authentication_error, not_found_error, rate_limit_error, overloaded_error...
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error shape: /v1/messages and /v1/messages/count_tokens."""

    type: str = "error"
    error: AnthropicErrorInfo


class Detail(BaseModel):
    """The seeds' error shape: FastAPI's."""

    detail: str


class ValidationProblem(BaseModel):
    """One problem FastAPI found in a request (it adds `input`, `ctx` and the like)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationDetail(BaseModel):
    """A seeds' 422: FastAPI's list of problems, or a message for a value past a server limit (max_length)."""

    detail: str | list[ValidationProblem]


def _responses(shape: type[BaseModel], statuses: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": ValidationDetail if s == 422 and shape is Detail else shape, "description": DESCRIPTIONS[s]}
        for s in sorted(statuses)
    }
    # Any other status (a 500 is a bug) comes in the same shape; it also keeps FastAPI from adding its 422.
    out["default"] = {"model": shape, "description": "Any other error, in the same shape."}
    return out


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an OpenAI route that may answer these statuses."""
    return _responses(ErrorResponse, statuses)


def anthropic_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an Anthropic route that may answer these statuses."""
    return _responses(AnthropicError, statuses)


def seed_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a seeds' route that may answer these statuses."""
    return _responses(Detail, statuses)
