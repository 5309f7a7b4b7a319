"""A small Python client for slmserve (sync and async): chat, stream, generate, batched, health.

    from slmserve.client import Client
    with Client("http://127.0.0.1:8000") as c:
        print(c.chat("Explain AI in one sentence.", max_tokens=64))
        for piece in c.stream("Write a haiku."):
            print(piece, end="", flush=True)

AsyncClient has the same methods as coroutines (stream is an async iterator).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx


class SlmServeError(Exception):
    """A non-2xx answer: status and the server's message (OpenAI or FastAPI error shape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def _messages(prompt: str | list[dict], system: str | None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return ([{"role": "system", "content": system}] if system else []) + messages


def _chat_body(prompt: str | list[dict], system: str | None, stream: bool, params: dict) -> dict:
    return {"messages": _messages(prompt, system), "stream": stream, **params}


def _check(r: httpx.Response) -> None:
    if r.is_success:
        return
    try:
        body = r.json()
    except ValueError:
        raise SlmServeError(r.status_code, r.text) from None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else body.get("detail", body)
    raise SlmServeError(r.status_code, message if isinstance(message, str) else json.dumps(message))


def _delta(line: str) -> str | None:
    """The text of one SSE line of a chat stream; None when the line carries none."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    data = json.loads(line[6:])
    if "error" in data:
        status = 429 if data["error"].get("code") == "rate_limit_exceeded" else 503
        raise SlmServeError(status, data["error"]["message"])
    choices = data.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content")


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 300.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict) -> Any:
        r = self._http.post(path, json=body)
        _check(r)
        return r.json()

    def health(self) -> dict:
        r = self._http.get("/health")
        return {"http_status": r.status_code, **r.json()}

    def chat_completion(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> dict:
        """The whole OpenAI chat completion object."""
        return self._post("/v1/chat/completions", _chat_body(prompt, system, False, params))

    def chat(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> str:
        """The assistant's answer to a message (or a list of messages)."""
        return self.chat_completion(prompt, system, **params)["choices"][0]["message"]["content"]

    def stream(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> Iterator[str]:
        """The answer's text pieces as they are generated."""
        with self._http.stream("POST", "/v1/chat/completions", json=_chat_body(prompt, system, True, params)) as r:
            if not r.is_success:
                r.read()
                _check(r)
            for line in r.iter_lines():
                if (text := _delta(line)) is not None:
                    yield text

    def generate(self, prompt: str, max_length: int | None = None, **params: Any) -> dict:
        """POST /generate: the prompt and its continuation (seeds 003/004)."""
        return self._post("/generate", {"prompt": prompt, "max_length": max_length, **params})

    def batched(self, queries: list[dict]) -> dict:
        """POST /chat/batched: all queries answered together; `responses` in order, `results` with errors."""
        return self._post("/chat/batched", {"queries": queries})


class AsyncClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 300.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict) -> Any:
        r = await self._http.post(path, json=body)
        _check(r)
        return r.json()

    async def health(self) -> dict:
        r = await self._http.get("/health")
        return {"http_status": r.status_code, **r.json()}

    async def chat_completion(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> dict:
        return await self._post("/v1/chat/completions", _chat_body(prompt, system, False, params))

    async def chat(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> str:
        return (await self.chat_completion(prompt, system, **params))["choices"][0]["message"]["content"]

    async def stream(self, prompt: str | list[dict], system: str | None = None, **params: Any) -> AsyncIterator[str]:
        body = _chat_body(prompt, system, True, params)
        async with self._http.stream("POST", "/v1/chat/completions", json=body) as r:
            if not r.is_success:
                await r.aread()
                _check(r)
            async for line in r.aiter_lines():
                if (text := _delta(line)) is not None:
                    yield text

    async def generate(self, prompt: str, max_length: int | None = None, **params: Any) -> dict:
        return await self._post("/generate", {"prompt": prompt, "max_length": max_length, **params})

    async def batched(self, queries: list[dict]) -> dict:
        return await self._post("/chat/batched", {"queries": queries})
