"""Structured outputs (response_format) against a live server on the bundled model, with the official client.

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

    assert isinstance(json.loads(ask({"type": "json_object"})), dict)
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
