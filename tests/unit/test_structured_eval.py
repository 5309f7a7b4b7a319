"""The structured eval's pure parts (scripts/structured_eval.py, slmserve/tools/structured_metrics.py): no server."""

import importlib.util
import json
from pathlib import Path

import pytest

from slmserve.engine.structured import grammar_from
from slmserve.tools.structured_metrics import (
    check,
    count_repeats,
    lenient_lists,
    lists_in,
    repeated_calls,
    score,
    summarize,
    targets,
)

SCRIPT = Path(__file__).parents[2] / "scripts" / "structured_eval.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("structured_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tasks(script):
    return {t["name"]: t for t in script.load_tasks()}


def repeats(text: str) -> tuple[int, int]:
    return count_repeats(lenient_lists(text))


def test_an_unclosed_list_counts_its_complete_items():
    assert repeats('["Rome", "Rome", "Ro') == (1, 2)
    assert repeats('{"name": "Rome", "landmarks": ["Colosseum", "Colosseum", "Colosseum", "Col') == (2, 3)
    assert repeats("[1, 2, 12") == (0, 2)  # a number at the end may have been cut short: not an item
    assert repeats("[true, tru") == (0, 1)


def test_lists_of_objects_and_nested_lists():
    text = '{"items": [{"task": "a", "tags": ["x", "x"]}, {"task": "a", "tags": ["x", "x"]}, {"task": "b'
    lists = lenient_lists(text)
    assert count_repeats(lists) == (3, 6)  # the second object repeats the first; each tags list repeats "x"
    value = {"items": [{"task": "a", "tags": ["x", "x"]}, {"task": "a", "tags": ["x", "x"]}]}
    assert count_repeats(lists_in(value)) == (3, 6)  # a parsed answer counts the same


def test_lenient_reading_of_complete_json_matches_the_parsed_value():
    value = {"a": [1, 1, [2, 2], {"b": ["c", "d", "c"]}], "e": [], "f": "[not, a, list]"}
    assert count_repeats(lenient_lists(json.dumps(value))) == count_repeats(lists_in(value)) == (3, 9)


def test_several_tool_calls_in_raw_text_are_all_read():
    text = (
        '<tool_call>\n{"name": "f", "arguments": {"l": ["a", "a"]}}\n</tool_call>\n'
        '<tool_call>\n{"name": "f", "arguments": {"l": ["b", "b", "b'
    )
    assert repeats(text) == (2, 4)
    assert repeats("no JSON here") == (0, 0)


def test_validity_against_the_schema(tasks):
    city = tasks["city"]
    good = {"name": "Paris", "country": "France", "population_millions": 2.1, "landmarks": ["Louvre"]}
    assert check(city, {"content": json.dumps(good)})[0]
    assert not check(city, {"content": json.dumps(good | {"population_millions": "2.1"})})[0]
    assert check(city, {"content": '{"name": "Paris", "landmarks": ["Louvre", "Lou'}) == (False, "not JSON", [])
    assert check(tasks["free_json"], {"content": '{"a": 1}'})[0]
    assert not check(tasks["free_json"], {"content": "[1]"})[0]


def test_validity_of_tool_answers(tasks):
    weather, travel = tasks["weather_call"], tasks["travel_call"]
    call = {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert check(weather, {"content": None, "tool_calls": [call]})[0]
    bad = {"function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "kelvin"}'}}
    assert not check(weather, {"tool_calls": [bad]})[0]
    assert not check(weather, {"tool_calls": [{"function": {"name": "nope", "arguments": "{}"}}]})[0]
    assert check(weather, {"content": "It is sunny in Paris."})[0]  # auto: text is an answer
    assert not check(weather, {"content": '<tool_call>\n{"name": "get_weather", "argu'})[0]
    assert not check(weather, {"content": "You can call the <tool_call><tool_call><tool_call>"})[0]
    assert not check(travel, {"content": "Sure, let me look."})[0]  # required: only calls


def test_repeated_calls_against_the_history():
    history = [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}]
    same = {"function": {"name": "f", "arguments": '{"city":  "Paris"}'}}  # same arguments, other spacing
    other = {"function": {"name": "f", "arguments": '{"city": "Rome"}'}}
    assert repeated_calls(history, [same]) == 1
    assert repeated_calls(history, [other, other]) == 1  # the second repeats the first


def test_score_and_summary(tasks):
    body = {
        "choices": [{"message": {"content": '{"name": "Rome", "landmarks": ["a", "a", "a'}, "finish_reason": "length"}],
        "usage": {"completion_tokens": 64},
    }
    record = score(tasks["city"], [], 200, body)
    assert record | {"content": None} == record | {
        "valid": False, "closed": False, "closed_at_budget": False, "list_items": 2, "repeated_items": 1,
        "repeats_from": "lenient", "tokens": 64, "content": None,
    }  # fmt: skip
    closed = {"content": '{"name": "Rome", "country": "Italy", "population_millions": 2.8, "landmarks": ["a"]}'}
    body = {"choices": [{"message": closed, "finish_reason": "stop", "closed_at_budget": True}], "usage": {}}
    budget = score(tasks["city"], [], 200, body)
    assert budget["valid"] and budget["closed_at_budget"] and not budget["closed"]
    body["usage"] = {"completion_tokens": 25}
    assert score(tasks["city"], [], 200, body, max_tokens=8)["over_budget"]  # a close that overran the budget
    error = score(tasks["city"], [], 400, {"error": {"message": "max_tokens 1 is below 23"}})
    summary = summarize([record, budget, error])
    assert summary["n"] == 3 and summary["errors"] == 1
    assert summary["valid_pct"] == 33.3 and summary["closed_pct"] == 0.0
    assert summary["repeated_items"] == 1 and summary["list_items"] == 3
    quality = [{"task": "ALL", "max_tokens": 256, "layout": "auto", "arm": "guards", "temperature": 0.0} | summary]
    missed = [c["what"] for c in targets({"quality": quality, "speed": [], "small_budgets": []}, 256) if not c["met"]]
    assert missed == ["valid %", "closed before the budget %", "repeated items %"]


def test_tasks_cover_the_issue(tasks):
    assert len(tasks) >= 10
    kinds = {t["kind"] for t in tasks.values()}
    assert kinds == {"json_schema", "json_object", "tools"}
    assert sum(t["kind"] == "tools" for t in tasks.values()) >= 2
    assert any(isinstance(p, dict) for t in tasks.values() for p in t["prompts"])  # a history holding a call
    for task in tasks.values():
        assert len(task["prompts"]) >= 10, task["name"]
        if task["kind"] == "json_schema":
            grammar_from("json_schema", task["schema"])
        elif task["kind"] == "json_object":
            grammar_from("json_object")
        else:
            for tool in task["tools"]:
                grammar_from("json_schema", tool["function"]["parameters"])


def test_requests_per_arm(script, tasks):
    city = script.request(tasks["city"], "Tell me about Paris.", 256, 0.0, script.ARMS["off"])
    assert city["body"]["loop_guard"] is False and city["body"]["budget_close"] is False
    assert city["body"]["response_format"]["json_schema"]["schema"] == tasks["city"]["schema"]
    guards = script.request(tasks["city"], "Tell me about Paris.", 256, 0.0, script.ARMS["guards"])
    assert "loop_guard" not in guards["body"] and "budget_close" not in guards["body"]
    plain = script.request(tasks["weather_answer"], tasks["weather_answer"]["prompts"][0], 64, 0.8, {}, False)
    assert "tools" not in plain["body"] and "response_format" not in plain["body"]
    assert [m["role"] for m in plain["body"]["messages"]] == ["user", "assistant", "tool"]
    assert plain["history"][0]["function"]["name"] == "get_weather"
