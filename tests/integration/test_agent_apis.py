"""The Responses and Messages APIs on the bundled model, through the official clients and agent frameworks
unmodified: openai's responses.*, anthropic's messages.*, the OpenAI Agents SDK, LangChain's ChatAnthropic."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from pydantic import BaseModel

from slmserve.settings import Settings
from tests.integration.conftest import LiveServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    server = LiveServer(Settings(state_dir=str(state))).start()
    yield server
    server.stop()


@pytest.fixture
def oai(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=0)


@pytest.fixture
def claude(live) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key="none", max_retries=0)


def test_responses_create_answers_and_is_stored(oai):
    r = oai.responses.create(model="smollm2-135m-instruct", input="What is the capital of France?", temperature=0)
    assert r.status == "completed" and "Paris" in r.output_text
    assert oai.responses.retrieve(r.id).output_text == r.output_text
    items = oai.responses.input_items.list(r.id)
    assert [i.content[0].text for i in items.data] == ["What is the capital of France?"]
    oai.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(r.id)


def test_responses_stream_events_add_up_to_the_answer(oai):
    events = list(oai.responses.create(input="Name three colors.", max_output_tokens=40, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


class Capital(BaseModel):
    country: str
    capital: str


def test_responses_parse_follows_the_schema(oai):
    r = oai.responses.parse(
        input="Extract the country and its capital from this sentence: The capital of Italy is Rome.",
        text_format=Capital,
        temperature=0,
    )
    assert isinstance(r.output_parsed, Capital) and r.output_parsed.capital == "Rome"


def test_a_function_call_round_trip_by_previous_response_id(oai):
    first = oai.responses.create(
        input="What's the weather in Paris?", tools=[WEATHER], tool_choice="required", temperature=0
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    second = oai.responses.create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}],
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=60,
    )
    # The same call again would loop forever (#31): the answer is text.
    assert [item.type for item in second.output] == ["message"] and second.output_text.strip(), (
        first.output,
        second.output,
    )
    listed = [i.type for i in oai.responses.input_items.list(second.id, order="asc").data]
    assert listed == ["message", "function_call", "function_call_output"]


def test_stored_responses_survive_a_restart(tmp_path):
    first = LiveServer(Settings(state_dir=str(tmp_path))).start()
    try:
        client = openai.OpenAI(base_url=f"{first.url}/v1", api_key="none", max_retries=0)
        r = client.responses.create(input="Say hi.", max_output_tokens=10)
    finally:
        first.stop()
    second = LiveServer(Settings(state_dir=str(tmp_path))).start()
    try:
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="none", max_retries=0)
        assert client.responses.retrieve(r.id).output_text == r.output_text
        follow = client.responses.create(input="Again.", previous_response_id=r.id, max_output_tokens=10)
        assert follow.status in ("completed", "incomplete")
    finally:
        second.stop()


def test_messages_create_and_stream(claude):
    # The anthropic client no longer takes temperature; the API still does, as a body field.
    ask = {"model": "smollm2-135m-instruct", "max_tokens": 40, "extra_body": {"temperature": 0}}
    m = claude.messages.create(**ask, messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert m.stop_reason in ("end_turn", "max_tokens") and "Paris" in m.content[0].text
    with claude.messages.stream(**ask, messages=[{"role": "user", "content": "Name a fruit."}]) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed and final.content[0].text == streamed and final.usage.output_tokens > 0


def test_messages_stop_sequences_and_count_tokens(claude):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    m = claude.messages.create(
        model="smollm2-135m-instruct",
        max_tokens=60,
        messages=messages,
        stop_sequences=["5"],
        extra_body={"temperature": 0},
    )
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "5" and "5" not in m.content[0].text
    counted = claude.messages.count_tokens(model="smollm2-135m-instruct", messages=messages)
    assert counted.input_tokens == m.usage.input_tokens


def test_messages_tool_use_and_tool_result(claude):
    tool = {"name": "get_weather", "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
    question = {"role": "user", "content": "What's the weather in Paris?"}
    # Greedy: a sampled first call may name another city, and the rule that ends tool loops bars only a call
    # identical to one answered, so the answer after the result could call again (said in issue #31's note).
    m = claude.messages.create(
        model="smollm2-135m-instruct", max_tokens=100, messages=[question], tools=[tool], tool_choice={"type": "any"},
        extra_body={"temperature": 0},
    )  # fmt: skip
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    history = [
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C and sunny"}]},
    ]
    answer = claude.messages.create(
        model="smollm2-135m-instruct", max_tokens=60, messages=history, tools=[tool], extra_body={"temperature": 0}
    )
    assert answer.stop_reason != "tool_use" and answer.content[0].type == "text" and answer.content[0].text.strip()


def test_messages_errors_in_anthropics_shape(claude):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(
            model="smollm2-135m-instruct",
            max_tokens=5,
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}
            ],
        )
    assert "image" in bad.value.body["error"]["message"]


def test_the_openai_agents_sdk_runs_a_function_tool(live):
    import agents

    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"18 C and sunny in {city}"

    client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=0)
    model = agents.OpenAIResponsesModel(model="smollm2-135m-instruct", openai_client=client)
    agent = agents.Agent(
        name="Weather",
        instructions="Answer questions about the weather. Use the get_weather tool.",
        tools=[get_weather],
        model=model,
        # A cut answer (response.incomplete) is an error to the SDK: room for the whole answer.
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=400, temperature=0),
    )
    agents.set_tracing_disabled(True)
    try:
        result = agents.Runner.run_sync(agent, "What's the weather in Paris?", max_turns=4)
    except agents.exceptions.ModelBehaviorError as exc:
        # Known, reported in issue #31's note: after the tool's result this 135M model may write near-identical
        # lines (`int choice_type_1;`, `_2;`, ...) to max_output_tokens; the server reports it as incomplete,
        # and the SDK raises on that. The tool was still called and its output sent back.
        assert "max_output_tokens" in str(exc) and calls == ["Paris"]
        return
    assert calls == ["Paris"] and isinstance(result.final_output, str) and result.final_output.strip()


def test_langchain_chat_anthropic_points_at_the_server(live):
    from langchain_anthropic import ChatAnthropic

    chat = ChatAnthropic(model="smollm2-135m-instruct", base_url=live.url, api_key="none", max_tokens=30, temperature=0)
    reply = chat.invoke("What is the capital of France?")
    assert "Paris" in reply.content
    chunks = list(chat.stream("Name a color."))
    assert "".join(c.content if isinstance(c.content, str) else "" for c in chunks).strip()
