"""Tool calling (server/tools.py): requests -> grammar and prompt, the model's text -> tool calls. No weights."""

import json

import pytest

from slmserve.engine.sampling import SamplingParams
from slmserve.engine.structured import grammar_from
from slmserve.models.chat_template import ChatTemplate
from slmserve.server.errors import APIError
from slmserve.server.protocol import openai as oa
from slmserve.server.tools import NO_CALLS, CallStream, ToolUse, answered_calls, render_history
from tests.fakes import ScriptedRunner, make_engine, run_all

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": None}}


def request(**kw) -> oa.ChatCompletionRequest:
    return oa.ChatCompletionRequest(messages=[{"role": "user", "content": "Weather in Paris?"}], **kw)


def sample_answers(tool_use: ToolUse, n: int = 8, runner=None, **kw) -> list[str]:
    """Answers under the request's grammar: drawn at random (flat logits over bytes) unless a runner is given."""
    engine = make_engine(runner or ScriptedRunner(uniform=True), max_running=8, max_waiting=16)
    for i in range(n):
        params = SamplingParams(**({"max_tokens": 300, "seed": i, "grammar": tool_use.grammar()} | kw))
        engine.add_request(str(i), [1], params)
    out = run_all(engine)
    assert all(out[f"reason:{i}"] == "stop" for i in range(n))
    return [out[str(i)] for i in range(n)]


def test_required_answers_are_always_calls_with_valid_arguments():
    tool_use = ToolUse.of(request(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False))
    for text in sample_answers(tool_use):
        content, calls = ToolUse.parse(text)
        assert content is None and calls, text
        for call in calls:
            args = json.loads(call.function.arguments)
            assert call.function.name in ("get_weather", "get_time") and call.id.startswith("call_")
            if call.function.name == "get_weather":
                assert set(args) == {"city", "unit"} and args["unit"] in ("C", "F") and len(args["city"]) <= 12


def test_a_named_function_is_the_only_one_called_and_parallel_false_gives_one_call():
    choice = {"type": "function", "function": {"name": "get_time"}}
    tool_use = ToolUse.of(request(tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False))
    for text in sample_answers(tool_use):
        _, calls = ToolUse.parse(text)
        assert [c.function.name for c in calls] == ["get_time"]


def test_auto_lets_the_model_choose_text_or_a_call_and_nothing_in_between():
    tool_use = ToolUse.of(request(tools=[WEATHER]))
    assert tool_use.choice == "auto"

    def answer(script: bytes) -> tuple[str | None, list]:
        (text,) = sample_answers(tool_use, 1, ScriptedRunner(script=script), temperature=0)
        return ToolUse.parse(text)

    assert answer(b"It is sunny.") == ("It is sunny.", [])
    content, calls = answer(
        b'<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}\n</tool_call>'
    )
    assert content is None and calls[0].function.arguments == '{"city": "Oslo", "unit": "C"}'
    content, calls = answer(b"<b>bold</b>")  # a "<" starts a call: the grammar writes the rest as one
    assert content is None and calls[0].function.name == "get_weather"


def test_auto_with_a_json_schema_answers_with_a_call_or_that_json():
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    tool_use = ToolUse.of(request(tools=[WEATHER], response_format=fmt))
    answers = sample_answers(tool_use, 12)
    for text in answers:
        content, calls = ToolUse.parse(text)
        assert calls or json.loads(content)["answer"] in ("yes", "no"), text
    assert any(ToolUse.parse(t)[1] for t in answers) and not all(ToolUse.parse(t)[1] for t in answers)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope'"),
        ({"tools": [WEATHER], "response_format": {"type": "regex", "regex": "a+"}}, "json_object or json_schema"),
    ],
)
def test_choices_that_cannot_be_honoured_are_400s(fields, says):
    with pytest.raises(APIError, match=says) as exc:
        ToolUse.of(request(**fields))
    assert exc.value.status == 400


def test_tool_choice_none_means_no_tools_at_all():
    assert ToolUse.of(request(tools=[WEATHER], tool_choice="none")) is None
    assert ToolUse.of(request()) is None


def test_parse_takes_only_whole_calls():
    good = (
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    )
    content, calls = ToolUse.parse(good)
    assert content is None and [(c.function.name, c.function.arguments) for c in calls] == [
        ("f", '{"x": 1}'),
        ("g", "{}"),
    ]
    for text in ['<tool_call>{"name": "f", "arguments": {"x": 1', "Sunny. <tool_call>{}</tool_call>", "hello"]:
        assert ToolUse.parse(text) == (text, [])


def test_the_prompt_describes_the_tools_and_earlier_calls_and_results():
    tool_use = ToolUse.of(request(tools=[WEATHER]))
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "22 C and sunny"},
    ]
    template = ChatTemplate(None, "", "<|im_end|>")  # ChatML
    prompt = template.render(tool_use.prompt_messages(render_history(history), template.takes_tools))
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\nYou may call functions")
    assert '"name": "get_weather", "description": "The weather in a city"' in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}'
        "\n</tool_call><|im_end|>" in prompt
    )
    assert "<|im_start|>tool\n22 C and sunny<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_a_template_that_takes_tools_renders_them_itself():
    source = (
        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    template = ChatTemplate(source, "", "")
    tool_use = ToolUse.of(request(tools=[WEATHER]))
    messages = tool_use.prompt_messages([{"role": "user", "content": "hi"}], template.takes_tools)
    assert template.takes_tools and template.render(messages, [WEATHER]) == "[get_weather]user: hi\n"


def test_calls_stream_as_a_head_then_argument_fragments_however_the_text_is_cut():
    text = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"ri}s", "days": [1, {"a": 2}]}}\n</tool_call>'
        '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
    )
    for size in (1, 2, 5, len(text)):
        stream, calls = CallStream(), {}
        for start in range(0, len(text), size):
            for delta in stream.feed(text[start : start + size]):
                (call,) = delta.tool_calls
                if call.id:
                    assert call.index == len(calls) and call.type == "function" and call.function.arguments == ""
                    calls[call.index] = [call.function.name, ""]
                else:
                    calls[call.index][1] += call.function.arguments
        assert stream.calls == 2
        assert calls == {
            0: ["get_weather", '{"city": "Pa\\"ri}s", "days": [1, {"a": 2}]}'],
            1: ["get_time", "{}"],
        }
        assert json.loads(calls[0][1])["city"] == 'Pa"ri}s'


def test_a_call_cut_short_streams_its_head_and_what_arguments_there_are():
    stream = CallStream()
    deltas = stream.feed('<tool_call>\n{"name": "f", "arguments": {"x": "ab')
    assert [d.tool_calls[0].function.name for d in deltas] == ["f", None]
    assert deltas[1].tool_calls[0].function.arguments == '{"x": "ab'
    assert stream.feed("") == [] and stream.calls == 1


def test_parallel_calls_call_each_tool_at_most_once():
    tool_use = ToolUse.of(request(tools=[WEATHER, TIME], tool_choice="required"))
    names = [[c.function.name for c in ToolUse.parse(text)[1]] for text in sample_answers(tool_use, n=16)]
    assert all(len(set(n)) == len(n) for n in names), names
    weather = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'
    time = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    for script, called in [(f"{weather}\n{time}", [weather, time]), (f"{weather}\n{weather}", [weather])]:
        [text] = sample_answers(tool_use, n=1, runner=ScriptedRunner(script.encode()), temperature=0)
        assert text.strip() == "\n".join(called)  # both tools in one answer; a second call of one is taken back


def test_complete_calls_are_kept_when_a_later_one_was_cut():
    whole = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    content, calls = ToolUse.parse(whole + '\n<tool_call>\n{"name": "get_weather", "argu')
    assert content is None and [c.function.name for c in calls] == ["get_time"]


def test_answered_calls_are_those_a_tool_message_answers():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    other = {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call, other]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert answered_calls(history) == ['{"arguments":{"city":"Paris"},"name":"get_weather"}']
    no_id = [*history[:2], {"role": "tool", "content": "sunny"}]
    assert len(answered_calls(no_id)) == 2  # a result without an id answers the calls before it


@pytest.mark.parametrize("text", ["Sunny. <tool_call>", "<tool_call>"])
def test_text_that_may_not_call_never_writes_the_tag(text):
    engine = make_engine(ScriptedRunner(text.encode()))
    engine.add_request("r", [1], SamplingParams(max_tokens=40, temperature=0, grammar=grammar_from("lark", NO_CALLS)))
    assert "<tool_call>" not in run_all(engine)["r"]
