"""The engine end to end on a scripted runner and a byte tokenizer."""

import pytest

from slmserve.engine.engine import UnknownAdapterError
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import QueueFullError
from tests.fakes import EOS, ScriptedRunner, make_engine, run_all


def test_generates_until_eos_and_reports_stop():
    engine = make_engine()
    engine.add_request("a", [1, 2, 3], SamplingParams(max_tokens=100, temperature=0))
    out = run_all(engine)
    assert out["a"] == "hello world" and out["reason:a"] == "stop"


def test_max_tokens_ends_with_length():
    engine = make_engine()
    engine.add_request("a", [1, 2, 3], SamplingParams(max_tokens=5, temperature=0))
    out = run_all(engine)
    assert out["a"] == "hello" and out["reason:a"] == "length"


def test_ignore_eos_runs_to_max_tokens():
    engine = make_engine()
    engine.add_request("a", [1], SamplingParams(max_tokens=15, temperature=0, ignore_eos=True))
    out = run_all(engine)
    assert out["reason:a"] == "length" and out["a"] == "hello world"  # EOS has no text


def test_stop_string_across_tokens_ends_the_request():
    engine = make_engine()
    engine.add_request("a", [1], SamplingParams(max_tokens=100, temperature=0, stop=["o w"]))
    out = run_all(engine)
    assert out["a"] == "hell" and out["reason:a"] == "stop"


def test_many_requests_share_steps():
    runner = ScriptedRunner()
    engine = make_engine(runner, max_running=4)
    for i in range(4):
        engine.add_request(str(i), [i + 1], SamplingParams(max_tokens=100, temperature=0))
    out = run_all(engine)
    assert all(out[str(i)] == "hello world" for i in range(4))
    assert max(len(b.chunks) for b in runner.batches) == 4
    assert len(runner.batches) == len("hello world") + 1  # one step per token, all four together


def test_abort_frees_the_slot_for_the_next_request():
    engine = make_engine(max_running=1)
    engine.add_request("a", [1], SamplingParams(max_tokens=100, temperature=0))
    engine.add_request("b", [2], SamplingParams(max_tokens=100, temperature=0))
    engine.step()
    assert engine.scheduler.running[0].request_id == "a"
    out = engine.abort("a")
    assert out.finish_reason == "abort"
    assert not engine.scheduler.running
    engine.step()
    assert engine.scheduler.running[0].request_id == "b"
    assert engine.abort("a") is None  # already gone


def test_seed_reproduces_sampled_text_and_seeds_differ():
    def text(seed):
        engine = make_engine(ScriptedRunner(uniform=True))
        engine.add_request("a", [1], SamplingParams(max_tokens=30, temperature=1.0, seed=seed, ignore_eos=True))
        return run_all(engine)["a"]

    assert text(7) == text(7)
    assert text(7) != text(8)


def test_queue_full_is_raised_to_the_caller():
    engine = make_engine(max_running=1, max_waiting=1)
    engine.add_request("a", [1], SamplingParams())  # the free slot
    engine.add_request("b", [1], SamplingParams())  # the waiting place
    with pytest.raises(QueueFullError):
        engine.add_request("c", [1], SamplingParams())


def test_eos_token_is_counted_but_not_shown():
    engine = make_engine(ScriptedRunner(script=b"hi"))
    engine.add_request("a", [1], SamplingParams(max_tokens=10, temperature=0))
    outs = []
    while engine.has_work:
        outs.extend(engine.step())
    assert outs[-1].token_ids == [EOS] and outs[-1].num_output_tokens == 3 and outs[-1].text == ""


def test_offline_generate_runs_prompts_together_to_the_end():
    runner = ScriptedRunner(script=b"abc")
    engine = make_engine(runner)
    out = engine.generate({"x": [1], "y": [2, 3]}, SamplingParams(max_tokens=10, temperature=0))
    assert out == {"x": [97, 98, 99, EOS], "y": [97, 98, 99, EOS]}
    assert not engine.has_work


def test_a_request_for_an_adapter_the_runner_does_not_hold_is_refused():
    engine = make_engine()
    with pytest.raises(UnknownAdapterError, match="'pirate' does not exist"):
        engine.add_request("a", [1], SamplingParams(), adapter="pirate")
    assert not engine.has_work
