"""Structured outputs (response_format) and tool calls against a live server on the bundled model, official client.

tests/torch_engine/test_structured.py runs these same tests on the torch engine.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Annotated

import httpx
import openai
import pytest
from pydantic import BaseModel, Field


class Mood(str, Enum):
    happy = "happy"
    sad = "sad"
    neutral = "neutral"


class Pet(BaseModel):
    name: str = Field(max_length=24)
    legs: int = Field(ge=0, le=8)


class Person(BaseModel):
    name: str = Field(max_length=32)
    age: int = Field(ge=0, le=130)
    height_m: float
    mood: Mood
    hobbies: list[Annotated[str, Field(max_length=24)]] = Field(max_length=3)
    pet: Pet | None = None


# As OpenAI's strict mode writes it: no properties beyond these (else a small model may go on adding keys).
PET_SCHEMA = Pet.model_json_schema() | {"additionalProperties": False}

PROMPTS = [
    f"Describe {who} as JSON."
    for who in (
        "a retired sailor who loves chess",
        "a ten-year-old girl with a dog",
        "Ada Lovelace",
        "a sad clown",
        "a tall basketball player",
        "a baker from Lyon",
        "your best friend",
        "a pirate captain with a parrot",
        "a happy gardener",
        "an astronaut on the moon",
        "a teacher with three cats",
        "a grumpy old man",
        "a marathon runner",
        "a jazz pianist",
        "a farmer with a horse",
        "a student who loves maths",
        "a famous painter",
        "a shy librarian",
        "a chef in Tokyo",
        "a child who collects stamps",
    )
]


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def model(client) -> str:
    return client.models.list().data[0].id


def test_parse_returns_valid_objects_for_every_prompt_at_two_temperatures(client, model):
    def parse(job: tuple[str, float]) -> Person:
        prompt, temperature = job
        r = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            response_format=Person,
            temperature=temperature,
            seed=7,
            max_tokens=400,
        )
        assert r.choices[0].finish_reason == "stop"
        return r.choices[0].message.parsed

    jobs = [(p, t) for p in PROMPTS for t in (0.0, 1.0)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        people = list(pool.map(parse, jobs))
    assert len(people) == 40 and all(isinstance(p, Person) for p in people)
    assert len({p.name for p in people}) > 5  # answers follow the prompts; the grammar does not write them


def test_streamed_text_under_a_schema_equals_the_plain_answer(client, model):
    body = dict(
        model=model,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        temperature=0,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": PET_SCHEMA}},
    )
    plain = client.chat.completions.create(**body).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**body, stream=True))
    assert streamed == plain
    Pet.model_validate_json(plain)


def test_json_object_regex_and_lark(client, model, server):
    def ask(response_format: dict, content: str = "Describe a cat as a JSON object with name and age.") -> str:
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            temperature=0,
            max_tokens=120,
            response_format=response_format,
        )
        assert r.choices[0].finish_reason == "stop"
        return r.choices[0].message.content

    # A prompt the 135M model answers in a short object on every layout measured (Q4_1, Q4_0 with either head);
    # "describe a cat" runs it into a loop of keys until max_tokens on some.
    city = ask({"type": "json_object"}, "Return a JSON object with a city and its country.")
    assert isinstance(json.loads(city), dict)
    assert re.fullmatch(r"\d{3}-\d{4}", ask({"type": "regex", "regex": r"\d{3}-\d{4}"}, "A phone number?"))
    lark = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"'
    assert ask({"type": "lark", "lark": lark}, "Is the sky blue?") in ("The answer is yes.", "The answer is no.")
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"prompt": "Colour:", "max_tokens": 10, "response_format": {"type": "regex", "regex": "(red|green)"}},
    )
    assert r.json()["choices"][0]["text"] in ("red", "green")


@pytest.mark.parametrize(
    ("response_format", "says"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}, "Invalid type"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}, "does not exist"),
        ({"type": "regex", "regex": "(a"}, "unclosed group"),
        ({"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 5, "maximum": 1}}}, "5"),
        ({"type": "yaml"}, "response_format"),
        ({"type": "json_schema"}, "needs the field 'json_schema'"),
    ],
)
def test_a_format_that_cannot_be_followed_is_a_400_naming_it(server, response_format, says):
    body = {"messages": [{"role": "user", "content": "x"}], "response_format": response_format}
    for stream in (False, True):
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body | {"stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert says in error["message"] and error["param"].startswith("response_format")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def calls_of(message) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, checked against the tools' schemas."""
    out = []
    for call in message.tool_calls or []:
        args = json.loads(call.function.arguments)
        assert call.type == "function" and call.id.startswith("call_")
        if call.function.name == "get_weather":
            assert isinstance(args["city"], str) and set(args) <= {"city", "unit"}
        else:
            assert call.function.name == "get_time" and isinstance(args["timezone"], str) and set(args) == {"timezone"}
        out.append((call.function.name, args))
    return out


def streamed_calls(stream) -> tuple[str, list[tuple[str, dict]], str, int]:
    """Content, calls, finish_reason and the number of argument fragments, from OpenAI's streamed deltas."""
    content, calls, finish, fragments = "", {}, None, 0
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.id:  # a call's first delta: id, type and name, in OpenAI's shape
                assert tc.type == "function" and tc.function.name and tc.index == len(calls)
                calls[tc.index] = [tc.function.name, tc.function.arguments or ""]
            else:
                calls[tc.index][1] += tc.function.arguments or ""
                fragments += 1
        finish = chunk.choices[0].finish_reason or finish
    return content, [(name, json.loads(args)) for name, args in calls.values()], finish, fragments


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [
        ("required", {"get_weather", "get_time"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
    ],
)
def test_required_and_named_tool_choice_answer_with_valid_calls_streamed_or_not(client, model, tool_choice, names):
    body = dict(
        model=model, messages=ASK, tools=[WEATHER, CLOCK], tool_choice=tool_choice, temperature=0, max_tokens=200
    )
    r = client.chat.completions.create(**body)
    choice = r.choices[0]
    calls = calls_of(choice.message)
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert calls and {name for name, _ in calls} <= names and len(calls) <= 2  # at most one call per tool
    content, streamed, finish, fragments = streamed_calls(client.chat.completions.create(**body, stream=True))
    assert (content, streamed, finish) == ("", calls, "tool_calls")
    assert fragments > 2 * len(calls)  # arguments stream as the model writes them, not in one piece at the end


def test_auto_and_none_and_a_tool_result_round_trip(client, model):
    for tool_choice in ("auto", "none"):
        body = dict(model=model, messages=ASK, tools=[WEATHER], tool_choice=tool_choice, temperature=0, max_tokens=40)
        message = client.chat.completions.create(**body).choices[0].message
        calls = calls_of(message)
        assert bool(message.content) != bool(calls)  # text or calls, never both, never neither
        assert tool_choice == "auto" or not calls
        content, streamed, _, _ = streamed_calls(client.chat.completions.create(**body, stream=True))
        assert (content or None, streamed) == (message.content, calls)
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees celsius and sunny"},
    ]  # fmt: skip
    r = client.chat.completions.create(model=model, messages=history, tools=[WEATHER], temperature=0, max_tokens=40)
    assert r.choices[0].message.content or calls_of(r.choices[0].message)


def test_auto_tools_with_a_json_schema_answer_a_call_or_that_json_streamed_or_not(client, model):
    schema = {"type": "object", "properties": {"forecast": {"enum": ["sunny", "rainy"]}}, "required": ["forecast"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": schema}}
    for question in ("What is the weather like in Paris today?", "Say whether it will be sunny or rainy."):
        body = dict(
            model=model,
            messages=[{"role": "user", "content": question}],
            tools=[WEATHER],
            response_format=fmt,
            temperature=0,
            max_tokens=60,
        )
        message = client.chat.completions.create(**body).choices[0].message
        calls = calls_of(message)
        assert calls or json.loads(message.content)["forecast"] in ("sunny", "rainy"), message
        content, streamed, _, _ = streamed_calls(client.chat.completions.create(**body, stream=True))
        assert (content or None, streamed) == (message.content, calls)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"tool_choice": "required"}, "tool_choice", "tool_choice needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objet"}}}]},
            "tools",
            "Invalid type",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "pattern"),
    ],
)
def test_tools_that_cannot_be_honoured_are_400s(server, fields, param, says):
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["param"].startswith(param)
