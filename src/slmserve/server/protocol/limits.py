"""How much one request may ask for, each bound checked while the body is validated and before its items are.

The error names the bound: the OpenAI routes answer 400 "stop: 40 stop strings, over the limit of 32 a request",
the seeds' routes FastAPI's 422. The body's own size is bounded before it is read (server/limits.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

# 2,048 short turns take ~0.25 s to tokenize (llama.cpp splits out special tokens in time quadratic in their count).
MAX_MESSAGES = 2048
# OpenAI takes 4 stop strings and TGI 4 by default; vLLM any number, and code-completion clients send a dozen or
# more, so allow those. Each is matched against held-back text on every token: 32 of 256 characters cost at worst
# ~1 ms a token on the engine thread, typical ones ~0.02 ms.
MAX_STOP = 32
MAX_STOP_CHARS = 256
# OpenAI takes 300 entries; constraining output to numbers takes ~1,000 (the vocabulary's digit tokens).
MAX_LOGIT_BIAS = 1024
MAX_TOOLS = 128  # OpenAI's
MAX_BATCHED_QUERIES = 64  # /chat/batched: twice the default slots; more is better sent as several requests
# /detokenize works on the event loop: 131,072 tokens (a long context) take ~0.1-0.3 s, a million 2 s.
MAX_DETOKENIZE = 131_072


def _too_many(count: int, what: str, limit: int) -> PydanticCustomError:
    return PydanticCustomError(
        "too_long",
        "{count} {what}, over the limit of {limit} a request",
        {"count": count, "what": what, "limit": limit},
    )


def at_most(limit: int, what: str) -> BeforeValidator:
    """A list or object of more than `limit` items is refused before any of its items is validated."""

    def check(value: Any) -> Any:
        if isinstance(value, list | dict) and len(value) > limit:
            raise _too_many(len(value), what, limit)
        return value

    return BeforeValidator(check)


def _check_stop(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if len(items) > MAX_STOP:
        raise _too_many(len(items), "stop strings", MAX_STOP)
    longest = max((len(s) for s in items if isinstance(s, str)), default=0)
    if longest > MAX_STOP_CHARS:
        raise PydanticCustomError(
            "string_too_long",
            "a stop string of {length} characters, over the limit of {limit}",
            {"length": longest, "limit": MAX_STOP_CHARS},
        )
    return value


stop_strings = BeforeValidator(_check_stop)
