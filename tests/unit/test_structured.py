"""Constrained decoding (engine/structured.py) through the engine, with the byte tokenizer: no weights."""

import json
import re

import numpy as np
import pytest

from slmserve.engine.sampling import SamplingParams
from slmserve.engine.structured import GrammarError, closed_objects, grammar_from
from tests.fakes import ScriptedRunner, make_engine, run_all

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]{1,8}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "kind": {"enum": ["cat", "dog"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["name", "age", "kind"],
    "additionalProperties": False,
}


def generate(grammar: str, runner=None, n: int = 1, **kw) -> dict[str, str]:
    engine = make_engine(runner or ScriptedRunner(uniform=True), max_running=8, max_waiting=16)
    for i in range(n):
        params = SamplingParams(**({"max_tokens": 200, "temperature": 1.0, "seed": i, "grammar": grammar} | kw))
        engine.add_request(str(i), [1, 2, 3], params)
    return run_all(engine)


def test_random_logits_under_a_regex_always_match_it():
    out = generate(grammar_from("regex", r"[0-9]{3}-[a-z]{2,5}"), n=8)
    for i in range(8):
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2,5}", out[str(i)]), out[str(i)]
        assert out[f"reason:{i}"] == "stop"
    assert len({out[str(i)] for i in range(8)}) > 1  # still sampled, not forced to one answer


def test_random_logits_under_a_json_schema_give_valid_objects():
    out = generate(grammar_from("json_schema", SCHEMA), n=8)
    for i in range(8):
        obj = json.loads(out[str(i)])
        assert set(obj) <= set(SCHEMA["properties"]) and {"name", "age", "kind"} <= set(obj)
        assert re.fullmatch("[a-z]{1,8}", obj["name"]) and 0 <= obj["age"] <= 120 and obj["kind"] in ("cat", "dog")
        assert all(isinstance(t, bool) for t in obj.get("tags", [])) and len(obj.get("tags", [])) <= 3
        assert out[f"reason:{i}"] == "stop"


def test_the_grammar_overrides_what_the_model_wants_and_leaves_other_requests_alone():
    engine = make_engine(ScriptedRunner(script=b"hello world"))
    engine.add_request("free", [1], SamplingParams(max_tokens=50, temperature=0))
    engine.add_request(
        "bound", [1], SamplingParams(max_tokens=50, temperature=0, grammar=grammar_from("regex", "hello [0-9]{2}"))
    )
    out = run_all(engine)
    assert out["free"] == "hello world"
    assert re.fullmatch("hello [0-9]{2}", out["bound"]) and out["reason:bound"] == "stop"


def test_json_object_is_compact_and_max_tokens_mid_object_closes_or_is_an_honest_length():
    out = generate(grammar_from("json_object"), max_tokens=6, temperature=1.0)
    assert isinstance(json.loads(out["0"]), dict) and out["reason:0"] == "stop"  # closed within its budget
    out = generate(grammar_from("json_object"), max_tokens=6, temperature=1.0, budget_close=False)
    assert out["0"].startswith("{") and out["reason:0"] == "length"
    out = generate(
        grammar_from("json_schema", {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]})
    )
    assert out["0"] == '{"a": 1}'  # one space after ':' and ',', no other whitespace


def test_logprobs_are_the_models_own_not_the_masked_ones():
    out_engine = make_engine(ScriptedRunner(script=b"x"))
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=1, grammar=grammar_from("regex", "y"))
    out_engine.add_request("a", [1], params)
    (out,) = out_engine.step()
    assert out.token_ids == [ord("y")]
    assert out.logprobs[0].top[0][0] == ord("x")  # the model's favourite, which the grammar refused
    assert out.logprobs[0].logprob < out.logprobs[0].top[0][1]


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("json_schema", {"type": "strin"}, "Invalid type"),
        ("json_schema", {"$ref": "#/nope"}, "does not exist"),
        ("regex", "[a-", "unclosed character class"),
        ("lark", "start: foo", "unknown name"),
        ("xml", None, "unknown grammar kind"),
    ],
)
def test_a_bad_grammar_is_refused_with_the_reason(kind, value, reason):
    with pytest.raises(GrammarError, match=reason):
        make_engine().add_request("a", [1], SamplingParams(grammar=grammar_from(kind, value)))


def test_masks_are_computed_once_per_step_for_the_rows_that_sample():
    engine = make_engine(ScriptedRunner(uniform=True))
    engine.add_request("a", list(range(100)), SamplingParams(max_tokens=5, grammar=grammar_from("regex", "[ab]+")))
    first = engine.scheduler.schedule()  # 64 of the 100 prompt tokens (the token budget): nothing to sample
    assert engine._start_masks(first) is None
    engine._postprocess(first, engine.runner.run(first))
    masks = engine._start_masks(engine.scheduler.schedule())
    rows, bitmask = masks[0], masks[1].result()
    assert list(rows.values()) == [0] and bitmask.shape == (1, (257 + 31) // 32)
    allowed = np.unpackbits(bitmask[0].view(np.uint8), bitorder="little")[:257]
    assert set(np.flatnonzero(allowed)) == {ord("a"), ord("b")}


def test_an_unsatisfiable_schema_is_refused_and_a_dead_end_mask_ends_the_request():
    with pytest.raises(GrammarError, match="minimum"):
        make_engine().add_request(
            "a",
            [1],
            SamplingParams(grammar=grammar_from("json_schema", {"type": "integer", "minimum": 5, "maximum": 2})),
        )
    engine = make_engine(ScriptedRunner(uniform=True))
    engine.add_request("a", [1], SamplingParams(max_tokens=5, grammar=grammar_from("regex", "[ab]+")))
    batch = engine.scheduler.schedule()
    (chunk,) = engine.scheduler.postprocess(batch)
    out = engine._append_token(chunk.seq, engine.runner.run(batch)[0], np.zeros(257, dtype=bool))
    assert out.finish_reason == "stop" and out.token_ids == [] and not engine.has_work


def test_objects_that_list_properties_take_no_others_unless_they_say_so():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}},
        "$defs": {"open": {"type": "object", "properties": {}, "additionalProperties": True}},
    }
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False and closed["properties"]["a"]["additionalProperties"] is False
    assert closed["$defs"]["open"]["additionalProperties"] is True and "additionalProperties" not in schema
    assert closed_objects({"type": "object"}) == {"type": "object"}  # json_object mode stays free
    out = generate(grammar_from("json_schema", {"type": "object", "properties": {"x": {"const": 1}}}))
    assert out["0"] in ("{}", '{"x": 1}')


def test_closing_the_engine_stops_its_mask_thread():
    import threading

    engine = make_engine(ScriptedRunner(uniform=True))
    engine.add_request("a", [1], SamplingParams(max_tokens=5, grammar=grammar_from("regex", "[ab]+")))
    run_all(engine)
    masks = engine._masks._pool
    assert any(t.name.startswith("slmserve-mask") for t in threading.enumerate())
    engine.close()
    assert all(not t.is_alive() for t in masks._threads)
