"""The Messages API through the official anthropic client, in-process on a scripted model: the message, its
streamed events, tool use and a tool_result round trip, stop sequences, token counts, errors in Anthropic's shape."""

from __future__ import annotations

import anthropic
import pytest

CALL = b'<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city now.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client_of(served, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="http://testserver", api_key=key, http_client=served, max_retries=0)


def ask(client, content="Say hello.", **kw):
    return client.messages.create(
        model="fake", max_tokens=kw.pop("max_tokens", 64), messages=[{"role": "user", "content": content}], **kw
    )


def test_a_plain_answer_is_a_message(serve):
    served = serve(b"Hello!")
    m = ask(client_of(served), system="You are terse.")
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_") and m.model == "fake"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Hello!"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.output_tokens == 7 and m.usage.input_tokens > 0  # six bytes and the end of text
    assert served.prompts[0].index("You are terse.") < served.prompts[0].index("Say hello.")


def test_max_tokens_and_stop_sequences_say_why_it_stopped(serve):
    client = client_of(serve(b"one, two, three"))
    m = ask(client, max_tokens=3)
    assert m.stop_reason == "max_tokens" and m.content[0].text == "one"
    m = ask(client, stop_sequences=["two", "never"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "two" and m.content[0].text == "one, "


def test_the_stream_has_anthropics_events_and_the_helper_rebuilds_the_message(serve):
    client = client_of(serve(b"Hi there"))
    with client.messages.stream(model="fake", max_tokens=32, messages=[{"role": "user", "content": "Hi"}]) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    body = {"model": "fake", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with serve(b"Hi there").stream("POST", "/v1/messages", json=body) as r:
        blocks = [b for b in "".join(r.iter_text()).split("\n\n") if b]
    raw = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    assert raw[:3] == ["message_start", "ping", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[3:-3]) == {"content_block_delta"}
    assert "text" in kinds  # the helper's own event, made of text deltas
    assert final.content[0].text == "Hi there" and final.stop_reason == "end_turn" and final.usage.output_tokens == 9


def test_tool_use_and_a_tool_result_round_trip(serve):
    served = serve(CALL)
    client = client_of(served)
    question = {"role": "user", "content": "Weather in Paris?"}
    m = client.messages.create(model="fake", max_tokens=128, messages=[question], tools=[WEATHER])
    assert m.stop_reason == "tool_use"
    [use] = m.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    assert use.id.startswith("toolu_")
    history = [
        question,
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
    ]
    again = client.messages.create(model="fake", max_tokens=8, messages=history, tools=[WEATHER])
    prompt = served.prompts[1]
    assert "Weather in Paris?" in prompt and '"get_weather"' in prompt and "18 C, sunny" in prompt
    # The same call again would loop; it is taken back (#31) and the model answers in text.
    assert [b.type for b in again.content] == ["text"] and again.stop_reason != "tool_use"


def test_a_streamed_tool_use(serve):
    client = client_of(serve(CALL))
    with client.messages.stream(
        model="fake", max_tokens=128, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER]
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}


def test_tool_choice_any_and_tool_force_a_call(serve):
    client = client_of(serve(b"I will not call"))
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        m = ask(client, "Weather?", tools=[WEATHER], tool_choice=choice, max_tokens=128)
        assert m.stop_reason == "tool_use" and m.content[0].name == "get_weather"


def test_count_tokens_counts_the_prompt_the_model_sees(serve):
    served = serve(b"ok")
    client = client_of(served)
    counted = client.messages.count_tokens(model="fake", messages=[{"role": "user", "content": "Hi there"}])
    m = ask(client, "Hi there")
    assert counted.input_tokens == m.usage.input_tokens == len(served.prompts[0].encode())
    with_tools = client.messages.count_tokens(
        model="fake", messages=[{"role": "user", "content": "Hi there"}], tools=[WEATHER]
    )
    assert with_tools.input_tokens > counted.input_tokens


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, 400, "invalid_request_error", "max_tokens"),
        ({"max_tokens": 5, "messages": []}, 400, "invalid_request_error", "messages"),
        (
            {"max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "Hi"}]},
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            400,
            "invalid_request_error",
            "image",
        ),
        (
            {
                "max_tokens": 5,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                "messages": [{"role": "user", "content": "Hi"}],
            },
            400,
            "invalid_request_error",
            "web_search_20250305",
        ),
        (
            {"model": "claude-sonnet-4", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]},
            404,
            "not_found_error",
            "claude-sonnet-4",
        ),
    ],
)
def test_errors_come_in_anthropics_shape(serve, body, status, kind, words):
    r = serve().post("/v1/messages", json={"model": "fake"} | body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind and words in r.json()["error"]["message"]


def test_the_client_raises_its_own_errors(serve):
    client = client_of(serve())
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="fake", max_tokens=0, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "Hi"}])


def test_the_key_may_come_as_x_api_key(serve):
    served = serve(b"ok", api_keys=["sk-test"])
    assert ask(client_of(served, "sk-test")).content[0].text == "ok"
    with pytest.raises(anthropic.AuthenticationError):
        ask(client_of(served, "wrong"))
    r = served.post(
        "/v1/messages", json={"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
