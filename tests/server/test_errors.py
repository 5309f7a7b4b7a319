"""One error table (#32): every exception the engine or serving may raise means the same status and code whether
the request streams or not, and each API family renders it in its own shape."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute

from slmserve.engine.async_engine import EngineDeadError, EngineStepError
from slmserve.engine.engine import UnknownAdapterError
from slmserve.engine.scheduler import QueueFullError
from slmserve.engine.structured import GrammarError
from slmserve.server.errors import APIError, routes_of
from slmserve.server.store import StoreError

RAISED = [
    (QueueFullError("full"), 429, "rate_limit_exceeded"),
    (EngineDeadError("the engine thread died"), 503, "engine_dead"),
    (EngineStepError("a step failed"), 500, "generation_failed"),
    (UnknownAdapterError("no adapter 'x'"), 404, "model_not_found"),
    (GrammarError("bad grammar"), 400, "invalid_grammar"),
    (StoreError("redis down"), 503, "store_unavailable"),
    (APIError(418, "as it is", code="teapot"), 418, "teapot"),
    (RuntimeError("something in the engine"), 503, "engine_error"),
    (KeyError("a bug of ours"), 500, "internal_error"),
]

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def failing(served, exc: BaseException) -> None:
    """Make the served model's engine raise exc when asked to generate."""

    async def generate(*args, **kw):
        raise exc
        yield  # an async generator, as the engine client's

    served.app.state.slm.default.serving.engine.generate = generate


@pytest.mark.parametrize(("exc", "status", "code"), RAISED, ids=[type(e).__name__ for e, _, _ in RAISED])
def test_streamed_or_not_an_exception_means_the_same(serve, exc, status, code):
    served = serve(raise_server_exceptions=False)
    failing(served, exc)
    plain = served.post("/v1/chat/completions", json=CHAT)
    with served.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as streamed:
        streamed.read()
    for r in (plain, streamed):
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
    assert ("retry-after" in plain.headers) == (status == 429)


@pytest.mark.parametrize(("exc", "status", "code"), RAISED[:4], ids=[type(e).__name__ for e, _, _ in RAISED[:4]])
def test_each_family_renders_the_error_in_its_shape(serve, exc, status, code):
    served = serve()
    failing(served, exc)
    for stream in (False, True):
        r = served.post("/v1/responses", json={"input": "Hi", "stream": stream})
        assert r.status_code == status and r.json()["error"]["code"] == code
        body = {"model": "fake", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
        r = served.post("/v1/messages", json=body)
        assert r.status_code == status and r.json()["type"] == "error" and r.json()["error"]["message"]
        r = served.post("/generate", json={"prompt": "Hi"})
        assert r.status_code == status and isinstance(r.json()["detail"], str)


def test_an_exception_after_the_first_token_is_an_error_event_in_each_family(serve):
    served = serve(b"hello")
    engine = served.app.state.slm.default.serving.engine
    real = engine.generate

    async def then_fail(*args, **kw):
        n = 0
        async for out in real(*args, **kw):
            yield out
            n += 1
            if n == 3:
                raise EngineStepError("a step failed midway")

    engine.generate = then_fail
    with served.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as r:
        text = r.read().decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert r.status_code == 200 and events[-1]["error"]["code"] == "generation_failed"
    assert events[0]["choices"] and text.endswith("data: [DONE]\n\n")  # tokens came before the error
    with served.stream("POST", "/v1/responses", json={"input": "Hi", "stream": True}) as r:
        text = r.read().decode()
    assert "event: error" in text and '"generation_failed"' in text and "event: response.failed" in text
    body = {"model": "fake", "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with served.stream("POST", "/v1/messages", json=body) as r:
        text = r.read().decode()
    assert "event: error" in text and '"api_error"' in text and "message_stop" not in text


def test_every_route_says_its_family_by_its_router(serve):
    served = serve()
    routes = [r for r in routes_of(served.app.router) if isinstance(r, APIRoute)]
    families = {r.path: getattr(r, "family", None) for r in routes}
    for path, family in families.items():
        if path.startswith("/v1/messages"):
            assert family == "anthropic", path
        elif path.startswith("/v1/") or path in ("/chat/completions", "/tokenize", "/detokenize"):
            assert family == "openai", path
        else:
            assert family == "seeds", path
    assert {"/v1/responses", "/v1/load_lora_adapter", "/generate", "/slm/info", "/chat"} <= set(families)


def test_a_refusal_before_routing_answers_in_the_family_of_the_route_it_was_for(serve):
    served = serve(max_body_bytes=1024)
    big = {"messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 4}
    r = served.post("/v1/messages", json=big | {"model": "fake"})
    assert r.status_code == 413 and r.json()["type"] == "error" and r.json()["error"]["type"] == "request_too_large"
    r = served.post("/chat/completions", json=big)
    assert r.status_code == 413 and "message" in r.json()["error"]
    r = served.post("/generate", json={"prompt": "x" * 2000})
    assert r.status_code == 413 and isinstance(r.json()["detail"], str)


def test_a_wrong_method_or_an_unknown_path_gets_a_shape_too(serve):
    served = serve()
    r = served.get("/v1/messages")  # a route of another method: its family's shape
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = served.get("/generate")
    assert r.status_code == 405 and isinstance(r.json()["detail"], str)
    r = served.get("/v1/no-such-route")  # no route: OpenAI's shape under /v1/
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = served.get("/no-such-page")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
