"""The loop guard and the budget close (engine/loop_guard.py, structured.py) through the engine, byte tokens."""

import json

import numpy as np

from slmserve.engine.loop_guard import LoopGuard, call_key
from slmserve.engine.repeated_lines import looping_tail
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import Trim
from slmserve.engine.structured import GuardVocab, grammar_from
from tests.fakes import VOCAB, ByteTokenizer, ScriptedRunner, make_engine

CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "population_millions": {"type": "number"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "population_millions", "landmarks"],
}
LOOP = b'{"name": "Rome", "population_millions": 2.8, "landmarks": ["Colosseum", "Forum", "Forum", "Forum", "Forum"'


def run(script: bytes, grammar: str, **kw) -> tuple[dict, ScriptedRunner]:
    """One greedy request whose model 'wants' to write script; its text, tokens, finish and closed flag."""
    runner = ScriptedRunner(script)
    engine = make_engine(runner)
    params = SamplingParams(**({"max_tokens": 200, "temperature": 0, "grammar": grammar} | kw))
    engine.add_request("r", [1, 2, 3], params)
    out = {"text": "", "tokens": [], "finish": None, "closed": False, "n": 0}
    while engine.has_work:
        for o in engine.step():
            out["text"] += o.text
            out["tokens"] += o.token_ids
            out["finish"], out["closed"], out["n"] = o.finish_reason, o.closed, o.num_output_tokens
    return out, runner


def test_a_repeated_list_item_is_taken_back_and_the_list_closed():
    out, runner = run(LOOP, grammar_from("json_schema", CITY))
    answer = json.loads(out["text"])
    assert answer["landmarks"] == ["Colosseum", "Forum"]
    assert out["finish"] == "stop" and not out["closed"]
    assert out["n"] == len(out["text"].encode())  # the tokens that came out, not those taken back
    assert any(isinstance(op, Trim) and op.keep > 3 for op in runner.kv_ops)  # the KV taken back was forgotten


def test_without_the_guard_the_same_model_loops_to_max_tokens():
    out, _ = run(LOOP, grammar_from("json_schema", CITY), loop_guard=False, budget_close=False, max_tokens=len(LOOP))
    assert out["finish"] == "length"
    assert out["text"].endswith('"Forum", "Forum", "Forum"')


def test_a_repeated_key_of_a_free_object_is_taken_back():
    script = b'{"city": "Rome", "city": "Rome", "city": "Rome"}'
    out, _ = run(script, grammar_from("json_object"))
    assert out["text"] == '{"city": "Rome"}'


def test_the_budget_close_ends_every_small_budget_with_json_that_validates():
    grammar = grammar_from("json_schema", CITY)
    smallest = len('{"name": "", "population_millions": 0, "landmarks": []}')  # byte tokens: a token a character
    closed = []
    for max_tokens in range(smallest, smallest + 40, 3):
        out, _ = run(LOOP, grammar, max_tokens=max_tokens)
        answer = json.loads(out["text"])
        assert set(answer) == set(CITY["required"]), (max_tokens, out["text"])
        assert out["n"] <= max_tokens and out["finish"] == "stop", (max_tokens, out)
        closed.append(out["closed"])
    assert closed[0] and not closed[-1]  # the smallest budget was closed; the largest let the answer end itself


def test_streamed_deltas_add_up_to_the_answer_while_text_is_held():
    out, _ = run(LOOP, grammar_from("json_schema", CITY))
    assert bytes(out["tokens"]).decode() == out["text"]  # every token came out once, in order


def test_an_answered_tool_call_is_taken_back_and_the_answer_is_text():
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    grammar = grammar_from("lark", _tools_grammar())
    answered = [call_key("get_weather", {"city": "Paris"})]
    out, _ = run(call.encode() + b"It is sunny.", grammar, answered_calls=answered)
    assert "<tool_call>" not in out["text"] and out["text"]
    out, _ = run(call.encode(), grammar, answered_calls=[call_key("get_weather", {"city": "Rome"})])
    assert out["text"] == call  # another city's answer does not forbid this call


def _tools_grammar() -> str:
    schema = {
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        "required": ["name", "arguments"],
    }
    return (
        f'start: call "\\n"? | TEXT\nTEXT: /[^<](?s:.)*/\n'
        f'call: "<tool_call>\\n" %json {json.dumps(schema)} "\\n</tool_call>"\n'
    )


def test_ban_only_rules_out_commas_that_continue_a_frozen_list():
    guard = LoopGuard(GuardVocab(ByteTokenizer().token_bytes, VOCAB, VOCAB))
    for b in b'["a", "b", "b"':
        guard.push(b)
    back = guard.push(ord("]"))
    assert back == len(', "b"]')
    guard.rollback(back)
    allowed = np.ones(VOCAB, dtype=bool)
    guard.ban(allowed)
    assert not allowed[ord(",")] and allowed[ord("]")]
    guard.push(ord('"'))  # inside a new string a comma is text again
    allowed[:] = True
    guard.ban(allowed)
    assert allowed[ord(",")]


def test_a_list_that_must_go_on_is_not_closed_by_the_guard():
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 4}
    out, _ = run(b'["a", "b", "b", "b", "b", "b"]', grammar_from("json_schema", schema), max_tokens=60)
    answer = json.loads(out["text"])
    assert len(answer) >= 4 and out["finish"] == "stop"  # valid: the repeat stays where the schema needs items


INCLUDE = b'You can use it like this:\n#include "stdlib.h"\n'


def test_a_text_answer_that_writes_a_line_a_third_time_is_ended_before_it():
    grammar = grammar_from("lark", _tools_grammar())
    out, _ = run(INCLUDE + b'#include "stdlib.h"\n' * 20, grammar, max_tokens=300)
    assert out["text"] == (INCLUDE + b'#include "stdlib.h"\n').decode()  # two copies kept, the third taken back
    assert out["finish"] == "stop" and out["n"] < 100


def test_short_lines_and_refrains_are_not_loops():
    grammar = grammar_from("lark", _tools_grammar())
    song = b"Row, row, row your boat\n}\n}\n}\n}\nRow, row, row your boat\nGently down the stream\n"
    out, _ = run(song, grammar, max_tokens=300)
    assert out["text"] == song.decode() and out["finish"] == "stop"


def test_a_line_that_may_be_a_third_copy_is_held_until_it_differs():
    guard = LoopGuard(GuardVocab(ByteTokenizer().token_bytes, VOCAB, VOCAB, ends=(256,)))
    for b in b"hello there friend\nhello there friend\nhello th":
        guard.push(b)
    released = bytes(guard.release())
    assert released == b"hello there friend\nhello there friend\n"  # "hello th" may still become the third
    for b in b"ey\n":
        guard.push(b)
    assert bytes(guard.release()) == b"hello they\n"
    for b in b"hello there friend":
        guard.push(b)
    assert guard.push(ord("\n")) == len(b"hello there friend\n") and guard.must_end
    guard.rollback(len(b"hello there friend\n"))
    allowed = np.ones(VOCAB, dtype=bool)
    guard.ban(allowed)
    assert np.flatnonzero(allowed).tolist() == [256]  # only the end of the answer


SUMMARY = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}


def test_a_loop_inside_a_string_is_cut_to_its_first_copy_and_the_string_closed():
    loop = b'{"summary": "Export fails. The export button does nothing. The export button does nothing. The export '
    out, _ = run(loop + b"button does nothing. " * 20 + b'"}', grammar_from("json_schema", SUMMARY))
    assert json.loads(out["text"]) == {"summary": "Export fails. The export button does nothing."}
    assert out["finish"] == "stop" and not out["closed"]


def test_counting_inside_a_string_is_a_loop_but_a_few_numbers_are_data():
    counting = b'{"summary": "Open on days ' + b"".join(b"%d, " % d for d in range(10, 60)) + b'"}'
    out, _ = run(counting, grammar_from("json_schema", SUMMARY))
    assert json.loads(out["text"]) == {"summary": "Open on days 10,"} and out["finish"] == "stop"
    years = b'{"summary": "Won in 2018, 2019, 2020, 2021, 2022 and 2023. Very very good."}'
    out, _ = run(years, grammar_from("json_schema", SUMMARY))
    assert out["text"] == years.decode()


def test_looping_tail_finds_where_the_second_copy_begins():
    assert looping_tail(b"Architect, Architect, Architect, ") == len(b"Architect, ")
    assert looping_tail(b"at :23:23:23:23") == len(b"at :23")
    assert looping_tail(b"metropolitan metropolitan ") is None  # two copies may be meant
    assert looping_tail(b"ha ha ha ") is None  # 9 bytes: too short to call a loop
    assert looping_tail(b"v1.2.3, v1.2.4, v1.2.5, ") is None


def test_the_fourth_of_a_family_of_near_repeats_closes_the_list():
    landmarks = b'"Tokyo Tower", "Tokyo Shinjuku", "Tokyo Shokukai", "Tokyo Shokuhai", "Tokyo Shokunin", "Tokyo Shoku"'
    out, _ = run(
        b'{"name": "Tokyo", "population_millions": 14, "landmarks": [' + landmarks, grammar_from("json_schema", CITY)
    )
    family = ["Tokyo Shokukai", "Tokyo Shokuhai", "Tokyo Shokunin"]  # "Tokyo Shoku" would be its fourth
    assert json.loads(out["text"])["landmarks"] == ["Tokyo Tower", "Tokyo Shinjuku", *family]
    assert out["finish"] == "stop" and not out["closed"]


def test_counting_list_items_are_a_family_but_three_like_questions_are_not():
    steps = b", ".join(b'"%d. Pour"' % n for n in range(1, 30))
    out, _ = run(
        b'["1. Mix", ' + steps + b"]", grammar_from("json_schema", {"type": "array", "items": {"type": "string"}})
    )
    assert json.loads(out["text"]) == ["1. Mix", "1. Pour", "2. Pour", "3. Pour"]
    quiz = [
        {"question": f"What is the capital of {c}?", "answer": a}
        for c, a in [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome")]
    ]
    out, _ = run(json.dumps(quiz).encode(), grammar_from("json_schema", {"type": "array"}))
    assert json.loads(out["text"]) == quiz
    dates = b'["2024-01-05", "2024-01-12", "2024-01-19", "2024-01-26", "2024-02-02"]'
    out, _ = run(dates, grammar_from("json_schema", {"type": "array"}))
    assert out["text"] == dates.decode()  # no letters: data such as dates, until eight of them count


def test_objects_are_a_family_by_their_first_string_value():
    todo = b", ".join(b'{"task": "tackle %d", "done": false}' % n for n in range(1, 20))
    out, _ = run(b'{"items": [' + todo + b"]}", grammar_from("json_object"))
    assert [i["task"] for i in json.loads(out["text"])["items"]] == ["tackle 1", "tackle 2", "tackle 3"]


def test_a_string_whose_clauses_are_a_family_is_closed_before_the_fourth():
    text = b"Pack the passport, then add it to the list, then add it to it again, then add it to that list, "
    out, _ = run(
        b'{"summary": "' + text + b"then add it to mine, then add it to yours" * 5 + b'"}',
        grammar_from("json_schema", SUMMARY),
    )
    kept = "Pack the passport, then add it to the list, then add it to it again, then add it to that list"
    assert json.loads(out["text"]) == {"summary": kept}
    sentences = b"The export fails. The export button does nothing. The app then stops. "
    out, _ = run(b'{"summary": "' + sentences + b'"}', grammar_from("json_schema", SUMMARY))
    assert json.loads(out["text"])["summary"] == sentences.decode()  # two like sentences are prose


def test_a_number_past_seventeen_digits_ends():
    schema = {"type": "object", "properties": {"answer_index": {"type": "integer"}}, "required": ["answer_index"]}
    out, _ = run(b'{"answer_index": ' + b"1113111122222233333334444" * 4 + b"}", grammar_from("json_schema", schema))
    assert json.loads(out["text"]) == {"answer_index": 11131111222222333}
    assert out["finish"] == "stop" and not out["closed"]


def test_a_text_answer_that_loops_within_its_lines_is_ended():
    grammar = grammar_from("lark", _tools_grammar())
    out, _ = run(b"This script will output:\n2022: " + b"2022: " * 40, grammar, max_tokens=300)
    assert out["text"] == "This script will output:\n2022: 2022: 2022: " and out["finish"] == "stop"  # streamed: kept
    table = b"| city | temp |\n|---|---|---|---|---|---|\n| Oslo | 3 |\n"
    out, _ = run(table, grammar, max_tokens=300)
    assert out["text"] == table.decode()  # a markdown rule is no loop of words


def test_lines_of_a_family_end_the_text_answer_after_the_fifth():
    grammar = grammar_from("lark", _tools_grammar())
    lines = b"".join(
        b"<tool_tool_call_%s>\n" % w for w in (b"result", b"success", b"failure", b"done", b"again", b"more")
    )
    out, _ = run(b"Here is how:\n" + lines, grammar, max_tokens=300)
    assert out["text"].splitlines()[1:] == [
        "<tool_tool_call_result>",
        "<tool_tool_call_success>",
        "<tool_tool_call_failure>",
        "<tool_tool_call_done>",
        "<tool_tool_call_again>",  # streamed as it came: the answer ends after it
    ]
    assert out["finish"] == "stop"
