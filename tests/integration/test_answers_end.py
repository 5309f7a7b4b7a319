"""Answers an app can use (issue 31), on the bundled model: JSON that closes within max_tokens, lists that do not
repeat, tool calls that end. tests/torch_engine/test_answers_end.py runs these same tests on the torch engine."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

TASKS_FILE = Path(__file__).parents[2] / "scripts" / "structured_eval_tasks.json"
TASKS = {t["name"]: t for t in json.loads(TASKS_FILE.read_text())["tasks"]}
CITY, RECIPE, TICKET = (TASKS[name]["schema"] for name in ("city", "recipe", "ticket"))
# A prompt on which the bundled model, left alone, writes "landmarks": ["Rome", "Rome", "Rome", ... to max_tokens.
LOOPS = "Describe Rome as a city record."
WEATHER = TASKS["weather_answer"]["tools"]


class City(BaseModel):
    """The issue's model, as an app would write it."""

    name: str
    country: str
    population_millions: float
    landmarks: list[str]


def fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def ask(server, content: str, **kw) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0, **kw}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)


def repeats(value) -> int:
    """List items equal to an earlier item of the same list, anywhere in a JSON value."""
    if isinstance(value, dict):
        return sum(repeats(v) for v in value.values())
    if not isinstance(value, list):
        return 0
    seen, n = [], 0
    for item in value:
        n += item in seen
        seen.append(item)
    return n + sum(repeats(v) for v in value)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_small_budgets_close_every_answer_valid_within_max_tokens(server):
    jobs = [(schema, n) for schema in (CITY, RECIPE, TICKET) for n in (24, 32, 40, 48, 64)]

    def one(job):
        schema, max_tokens = job
        r = ask(server, "Tell me about Lisbon.", response_format=fmt(schema), max_tokens=max_tokens)
        return schema, max_tokens, r

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    closed = 0
    for schema, max_tokens, r in results:
        if r.status_code == 400:  # below this schema's smallest answer: the error says so
            assert r.json()["error"]["code"] == "max_tokens_too_small", r.text
            continue
        choice = r.json()["choices"][0]
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
        assert r.json()["usage"]["completion_tokens"] <= max_tokens and choice["finish_reason"] == "stop"
        closed += choice["closed_at_budget"]
    assert closed >= 5  # most of these budgets are too small for the model's own answer


def test_max_tokens_below_the_smallest_answer_is_a_400_naming_it(server):
    r = ask(server, "Tell me about Lisbon.", response_format=fmt(RECIPE), max_tokens=3)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    smallest = int(re.search(r"takes (\d+) tokens", r.json()["error"]["message"]).group(1))
    r = ask(server, "Tell me about Lisbon.", response_format=fmt(RECIPE), max_tokens=smallest)
    assert r.status_code == 200 and r.json()["choices"][0]["closed_at_budget"]
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), RECIPE)
    off = ask(server, "Tell me about Lisbon.", response_format=fmt(RECIPE), max_tokens=3, budget_close=False)
    assert off.status_code == 200 and off.json()["choices"][0]["finish_reason"] == "length"


def test_the_loop_guard_stops_lists_that_repeat_without_it(server):
    prompts = TASKS["city"]["prompts"]

    def both(prompt: str) -> tuple[dict, dict]:
        off = ask(server, prompt, response_format=fmt(CITY), max_tokens=200, loop_guard=False, budget_close=False)
        on = ask(server, prompt, response_format=fmt(CITY), max_tokens=200)
        return off.json()["choices"][0], on.json()["choices"][0]

    with ThreadPoolExecutor(len(prompts)) as pool:
        pairs = list(pool.map(both, prompts))
    looped = [on for off, on in pairs if re.search(r'("[^"]+"), \1, \1', off["message"]["content"])]
    assert looped  # the failure the guard is for: some of these answers loop to max_tokens without it
    for _, on in pairs:
        answer = json.loads(on["message"]["content"])
        jsonschema.validate(answer, CITY)
        assert repeats(answer) == 0, answer
    # Most of those now end by themselves; some go on with new variants ("Tokyo Shokukai", "Tokyo Shokuhai", ...:
    # not verbatim repeats) until the budget closes them.
    ended = [on for on in looped if on["finish_reason"] == "stop" and not on["closed_at_budget"]]
    assert 2 * len(ended) >= len(looped), [on["message"]["content"] for on in looped]


def test_streamed_text_equals_the_answer_under_every_guard(client, model):
    for extra in ({}, {"loop_guard": False}, {"budget_close": False}, {"dry_multiplier": 0.8}):
        for max_tokens in (30, 200):
            body = dict(
                model=model,
                messages=[{"role": "user", "content": LOOPS}],
                response_format=fmt(CITY),
                temperature=0,
                max_tokens=max_tokens,
                extra_body=extra,
            )
            whole = client.chat.completions.create(**body).choices[0]
            chunks = list(client.chat.completions.create(**body, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            last = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason][-1]
            assert text == whole.message.content, (extra, max_tokens)
            assert last.finish_reason == whole.finish_reason
            assert bool(getattr(last, "closed_at_budget", None)) == bool(whole.model_extra["closed_at_budget"])


def test_the_guards_keep_greedy_answers_batch_invariant(server):
    alone = ask(server, LOOPS, response_format=fmt(CITY), max_tokens=120).json()["choices"][0]["message"]
    others = [f"Tell me about {city}." for city in ("Oslo", "Lima", "Cairo", "Delhi", "Sydney", "Tokyo")]
    with ThreadPoolExecutor(len(others) + 1) as pool:
        crowd = [pool.submit(ask, server, p, response_format=fmt(CITY), max_tokens=120) for p in others]
        among = pool.submit(ask, server, LOOPS, response_format=fmt(CITY), max_tokens=120).result()
        assert all(f.result().status_code == 200 for f in crowd)
    assert among.json()["choices"][0]["message"] == alone


def test_parse_gets_a_city_for_every_city(client, model):
    def parse(city: str) -> City:
        r = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": f"Tell me about {city}."}],
            response_format=City, temperature=0, max_tokens=200,
        )  # fmt: skip
        return r.choices[0].message.parsed  # raises LengthFinishReasonError if the answer ran out

    cities = ["Paris", "Rome", "Tokyo", "Cairo", "Sydney", "Lima", "Oslo", "Delhi"]
    with ThreadPoolExecutor(len(cities)) as pool:
        parsed = list(pool.map(parse, cities))
    assert all(isinstance(c, City) for c in parsed)
    assert sum(repeats(c.landmarks) for c in parsed) == 0


def history(call_args: str) -> list[dict]:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": call_args}}
    return [
        {"role": "user", "content": "Do I need an umbrella in London today?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"condition": "light rain", "temp_c": 12}'},
    ]


def test_a_call_the_history_already_answered_is_not_made_again(client, model):
    messages = history('{"city": "London"}')
    for stream in (False, True):
        r = client.chat.completions.create(
            model=model, messages=messages, tools=WEATHER, temperature=0, max_tokens=120, stream=stream
        )
        if stream:
            chunks = [c.choices[0] for c in r if c.choices]
            content = "".join(c.delta.content or "" for c in chunks)
            calls = [tc for c in chunks for tc in (c.delta.tool_calls or []) if tc.function.name]
        else:
            content, calls = r.choices[0].message.content or "", r.choices[0].message.tool_calls or []
        repeated = [c for c in calls if c.function.name == "get_weather" and "London" in (c.function.arguments or "")]
        assert not repeated and (content or calls), (stream, content, calls)
        assert "<tool_call>" not in content


@pytest.mark.parametrize("tools", [{}, {"tools": WEATHER, "tool_choice": "none"}])
def test_without_tools_the_answer_never_copies_the_call_markup(server, tools):
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": history('{"city": "London"}'), "temperature": 0, "max_tokens": 80, **tools},
        timeout=120,
    )
    message = r.json()["choices"][0]["message"]
    assert message["content"] and "<tool_call>" not in message["content"] and not message.get("tool_calls")


@pytest.fixture
def model(client) -> str:
    return client.models.list().data[0].id
