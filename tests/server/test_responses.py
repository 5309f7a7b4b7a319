"""The Responses API through the official openai client, in-process on a scripted model: shapes, streamed events,
tools and their round trip, structured text, stored responses and their follow-ups, errors."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from slmserve.server.store import StoreError

CALL = b'<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client_of(served) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=served, max_retries=0)


def test_a_plain_answer_is_a_response_object(serve):
    client = client_of(serve(b"Hello there!"))
    r = client.responses.create(model="fake", input="Say hello.", instructions="Be brief.")
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text == "Hello there!"
    [item] = r.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text"
    assert r.usage.output_tokens == len(b"Hello there!") + 1 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Be brief." and r.model == "fake"


def test_the_prompt_holds_instructions_and_input(serve):
    served = serve(b"ok")
    client_of(served).responses.create(model="fake", input="What is 2+2?", instructions="Answer in French.")
    assert "Answer in French." in served.prompts[0] and "What is 2+2?" in served.prompts[0]
    assert served.prompts[0].index("Answer in French.") < served.prompts[0].index("What is 2+2?")


def test_max_output_tokens_makes_an_incomplete_response(serve):
    r = client_of(serve(b"a long answer")).responses.create(model="fake", input="Hi", max_output_tokens=4)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "a lo" and r.output[0].status == "incomplete"


def test_streamed_events_come_in_openai_order(serve):
    client = client_of(serve(b"Hi you"))
    events = list(client.responses.create(model="fake", input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hi you"
    done = events[-1].response
    assert done.status == "completed" and done.output_text == "Hi you"
    assert done.usage.output_tokens == 7  # the end of text is a token too
    assert events[0].response.status == "in_progress" and events[0].response.id == done.id


def test_the_stream_is_server_sent_events_with_event_lines(serve):
    served = serve(b"Hi")
    with served.stream("POST", "/v1/responses", json={"input": "Hi", "stream": True}) as r:
        text = "".join(r.iter_text())
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("event: ") and "\ndata: " in b for b in blocks)
    for block in blocks:
        name, data = block.split("\n", 1)
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "[DONE]" not in text


def test_a_function_call_and_its_output_round_trip(serve):
    served = serve(CALL)
    client = client_of(served)
    first = client.responses.create(model="fake", input="Weather in Paris?", tools=[WEATHER], temperature=0)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    second = client.responses.create(
        model="fake",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}],
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=8,
    )
    # The model saw the question, its call and the result; the same call again is taken back (#31), so it answers.
    prompt = served.prompts[1]
    assert "Weather in Paris?" in prompt and '"get_weather"' in prompt and '{"temp_c": 18}' in prompt
    assert [item.type for item in second.output] == ["message"]


def test_a_streamed_function_call(serve):
    client = client_of(serve(CALL))
    events = list(client.responses.create(model="fake", input="Weather?", tools=[WEATHER], stream=True))
    kinds = [e.type for e in events]
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(deltas) == json.loads(done.arguments) == {"city": "Paris"}
    assert "response.output_text.delta" not in kinds and kinds[-1] == "response.completed"
    assert events[-1].response.output[0].call_id == added.item.call_id


def test_a_named_tool_choice_forces_the_call(serve):
    served = serve(b"no call here")
    r = client_of(served).responses.create(
        model="fake", input="Weather?", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}
    )
    assert r.output[0].type == "function_call" and r.output[0].name == "get_weather"


class City(BaseModel):
    city: str


def test_text_format_json_schema_is_enforced_and_parsed(serve):
    client = client_of(serve(b'{"city": "Paris"}'))
    r = client.responses.parse(model="fake", input="Where is the Louvre?", text_format=City)
    assert r.output_parsed == City(city="Paris")
    # A script that is not JSON is held to the schema all the same.
    client = client_of(serve(b"Paris, of course"))
    r = client.responses.parse(model="fake", input="Where?", text_format=City, max_output_tokens=30)
    City.model_validate_json(r.output_text)


def test_stored_responses_can_be_read_listed_and_deleted(serve):
    client = client_of(serve(b"Bonjour"))
    first = client.responses.create(model="fake", input="Say hello in French.")
    second = client.responses.create(model="fake", input="Again.", previous_response_id=first.id)
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == "Bonjour" and got.previous_response_id == first.id
    items = client.responses.input_items.list(second.id)  # newest first, predecessors' items included
    texts = [item.content[0].text for item in items.data]
    assert texts == ["Again.", "Bonjour", "Say hello in French."]
    page = client.responses.input_items.list(second.id, order="asc", limit=2)
    assert [i.content[0].text for i in page.data] == ["Say hello in French.", "Bonjour"] and page.has_more
    rest = client.responses.input_items.list(second.id, order="asc", after=page.last_id)
    assert [i.content[0].text for i in rest.data] == ["Again."] and not rest.has_more
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)


def test_store_false_keeps_nothing(serve):
    client = client_of(serve(b"x"))
    r = client.responses.create(model="fake", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_an_unknown_previous_response_is_a_404_in_openai_shape(serve):
    served = serve()
    r = served.post("/v1/responses", json={"input": "Hi", "previous_response_id": "resp_nope"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["param"] == "previous_response_id" and "resp_nope" in error["message"]
    assert error["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": "Hi", "background": True}, "background"),
        ({"input": "Hi", "temperature": 3}, "temperature"),
        ({"input": "Hi", "top_k": -5}, "top_k"),
        ({"input": []}, "input"),
        ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(serve, body, param):
    r = serve().post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_sampling_extras_reach_the_engine(serve):
    served = serve(b"abc")
    r = served.post("/v1/responses", json={"input": "Hi", "stop": ["b"], "seed": 7})
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == "a"


def test_stored_responses_survive_a_restart(serve, tmp_path):
    state = str(tmp_path / "kept")
    first = client_of(serve(b"Remember me", state_dir=state)).responses.create(model="fake", input="Hi")
    again = client_of(serve(b"Later", state_dir=state))
    assert again.responses.retrieve(first.id).output_text == "Remember me"
    follow = again.responses.create(model="fake", input="And?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id


def test_a_corrupt_store_is_an_error_at_start(tmp_path):
    from slmserve.server.app import create_app
    from slmserve.settings import Settings

    (tmp_path / "responses.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="responses.sqlite3"):
        create_app(Settings(model="fake", state_dir=str(tmp_path)))
