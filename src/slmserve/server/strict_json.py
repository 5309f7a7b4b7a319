"""Request bodies held to JSON itself: no NaN or Infinity, no number too large for a float, no lone surrogate.

Python's json module takes all three, and each then fails far from the door: a lone surrogate in the tokenizer
(UnicodeEncodeError), a NaN in a 422 that echoes it (JSON cannot carry NaN). Refused while the body is decoded,
they are FastAPI's own "not valid JSON" error, in each route family's shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

# An escaped surrogate: the only way a decoded JSON string can hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _check_text(value: Any) -> None:
    """Raise UnicodeEncodeError for a string anywhere in value that holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads(body: bytes) -> Any:
    """json.loads, refusing what is not JSON; json.JSONDecodeError naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"the body is not UTF-8 ({exc.reason} at byte {exc.start})", "", 0) from exc
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        if _SURROGATE_ESCAPE.search(body):  # rare: check every string only then
            _check_text(value)
    except UnicodeEncodeError as exc:
        raise json.JSONDecodeError(
            r"a string holds a lone surrogate (\ud800-\udfff), which is not text", text, 0
        ) from exc
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from exc
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handlers read JSON bodies through `loads`. `family` names the API whose error shape the
    route answers in (errors.respond): each router's route class says it, so no list of paths does."""

    family = "seeds"

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_handler(request: Request):
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


class OpenAIRoute(StrictJSONRoute):
    """A route of the OpenAI API (and of vLLM's additions to it): errors as `{"error": {...}}`."""

    family = "openai"


class AnthropicRoute(StrictJSONRoute):
    """A route of Anthropic's Messages API: errors as `{"type": "error", "error": {...}}`."""

    family = "anthropic"
