"""DRY's request fields over HTTP, in-process on a scripted engine (no weights): validation in each API's error
shape, the server's defaults for fields a request leaves out, and the penalty reaching the sampler."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from slmserve.engine.loader import LoadedModel
from slmserve.models.chat_template import ChatTemplate
from slmserve.server.app import create_app
from slmserve.settings import Settings
from tests.fakes import ChatRunner, make_engine

LOOP = b"abcd" * 3


@pytest.fixture
def served():
    """Start a server on the scripted model with these settings: (client, the SamplingParams the engine got)."""
    clients = []

    def start(**settings) -> tuple[TestClient, list]:
        runner = ChatRunner(LOOP)
        engine = make_engine(runner, kv_capacity=4096)
        seen = []
        add = engine.add_request

        def recording(request_id, prompt_token_ids, params, *args, **kw):
            seen.append(params)
            return add(request_id, prompt_token_ids, params, *args, **kw)

        engine.add_request = recording
        model = LoadedModel("fake", None, engine, runner, runner.tokenizer, ChatTemplate(None, "", ""), 2048)
        client = TestClient(create_app(Settings(model="fake", **settings), model))
        clients.append(client.__enter__())
        return client, seen

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def chat_body(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "go"}], "temperature": 0, "max_tokens": len(LOOP), **fields}


def chat(client: TestClient, **fields):
    return client.post("/v1/chat/completions", json=chat_body(**fields))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dry_multiplier", -1),
        ("dry_base", 0.5),
        ("dry_allowed_length", -1),
        ("dry_penalty_last_n", -2),
        ("dry_sequence_breakers", []),
        ("dry_sequence_breakers", ["x"] * 33),
    ],
)
def test_a_bad_dry_value_is_a_400_in_openais_shape(served, field, value):
    client, seen = served()
    for route in ("/v1/chat/completions", "/v1/completions"):
        body = {"prompt": "go"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "go"}]}
        r = client.post(route, json={**body, field: value})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field and error["type"] == "invalid_request_error" and field in error["message"]
    assert seen == []


def test_a_breaker_too_long_is_a_400_naming_the_rule(served):
    client, _ = served()
    r = chat(client, dry_sequence_breakers=["x" * 41])
    assert r.status_code == 400 and "at most 40 bytes" in r.json()["error"]["message"]


def test_the_seed_routes_check_the_same_fields_in_their_own_shape(served):
    client, _ = served()
    r = client.post("/infer", json={"user_prompt": "go", "dry_multiplier": -1})
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/generate", json={"prompt": "go", "dry_sequence_breakers": ["x" * 41]})
    assert r.status_code == 400 and "at most 40 bytes" in r.json()["detail"]


def test_fields_left_out_take_the_servers_defaults_on_every_route(served):
    client, seen = served(dry_multiplier=0.5, dry_allowed_length=3, dry_sequence_breakers='["\\n", "##"]')
    assert chat(client).status_code == 200
    assert chat(client, dry_multiplier=0, dry_base=3, dry_sequence_breakers=[":"]).status_code == 200
    assert client.post("/v1/completions", json={"prompt": "go", "dry_penalty_last_n": 64}).status_code == 200
    assert (
        client.post("/infer", json={"user_prompt": "go", "max_tokens": 4, "dry_allowed_length": 1}).status_code == 200
    )
    assert client.post("/generate", json={"prompt": "go", "dry_base": 2}).status_code == 200
    assert client.post("/slm/generate", json={"prompt": "go", "max_new_tokens": 4}).status_code == 200
    assert client.post("/slm/generate", json={"prompt": "go", "dry_multiplier": 0.25}).status_code == 200
    dry = [
        (p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, p.dry_sequence_breakers)
        for p in seen
    ]
    assert dry == [
        (0.5, 1.75, 3, -1, ["\n", "##"]),
        (0.0, 3.0, 3, -1, [":"]),  # an explicit 0 turns the server's default off
        (0.5, 1.75, 3, 64, ["\n", "##"]),
        (0.5, 1.75, 1, -1, ["\n", "##"]),
        (0.5, 2.0, 3, -1, ["\n", "##"]),
        (0.5, 1.75, 3, -1, ["\n", "##"]),
        (0.25, 1.75, 3, -1, ["\n", "##"]),
    ]


def test_loop_guard_and_budget_close_reach_the_engine(served):
    client, seen = served()
    json_object = {"type": "json_object"}
    assert chat(client, response_format=json_object).status_code == 200
    assert chat(client, response_format=json_object, loop_guard=False, budget_close=False).status_code == 200
    assert [(p.loop_guard, p.budget_close) for p in seen] == [(True, True), (False, False)]


def test_a_guarded_answer_gets_dry_over_the_answer_alone_unless_dry_is_set(served):
    client, seen = served()
    json_object = {"type": "json_object"}
    for extra in ({}, {"dry_multiplier": 0}, {"loop_guard": False}, {"response_format": None}):
        assert chat(client, **({"response_format": json_object} | extra)).status_code == 200
    assert [(p.dry_multiplier, p.dry_answer_only) for p in seen] == [(0.8, True), (0, False), (0, False), (0, False)]
    client, seen = served(dry_multiplier=0.5)  # the server's own DRY wins, over the whole context
    assert chat(client, response_format=json_object).status_code == 200
    assert [(p.dry_multiplier, p.dry_answer_only) for p in seen] == [(0.5, False)]


def test_dry_steers_the_scripted_loop_and_streams_the_same_text(served):
    client, _ = served()
    plain = chat(client).json()["choices"][0]["message"]["content"]
    dried = chat(client, dry_multiplier=50).json()["choices"][0]["message"]["content"]
    assert plain == LOOP.decode() and dried.startswith("abcdab") and dried != plain
    with client.stream("POST", "/v1/chat/completions", json=chat_body(dry_multiplier=50, stream=True)) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == dried
