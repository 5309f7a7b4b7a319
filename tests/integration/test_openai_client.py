"""The official openai client against a live slmserve."""

import openai
import pytest


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m-instruct"]


def test_chat(client):
    r = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hello!"}], max_tokens=12, temperature=0
    )
    assert r.choices[0].message.content and r.usage.completion_tokens <= 12


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hello!"}], max_tokens=12, temperature=0
    )
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completions(client):
    r = client.completions.create(model="smollm2-135m-instruct", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens == 8


def test_errors_surface_as_openai_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert exc.value.body["param"] == "temperature"
