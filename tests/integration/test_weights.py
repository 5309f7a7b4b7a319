"""The weight layout on the bundled model: requantized once into the cache, reused, rebuilt, or given up safely."""

import logging
import os
import shutil

import httpx
import pytest

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.models import weights
from slmserve.models.registry import resolve_model_path
from slmserve.settings import Settings

BUNDLED = resolve_model_path("smollm2-135m-instruct")


def small(tmp_path, **kw) -> Settings:
    return Settings(cache_dir=str(tmp_path), max_running=2, ctx_size=1024, **kw)


def test_auto_requantizes_the_bundled_file_once_then_reuses_it(tmp_path):
    first = weights.plan(BUNDLED, "auto", tmp_path)
    assert first.requantized and first.layout == "q4_0" and first.source_type == "q4_1"
    assert first.path.parent == tmp_path / "weights" and first.path.is_file()
    types = weights.tensor_types(first.path)
    assert weights.main_type(types) == "q4_0" and "q4_1" not in types
    assert types["q5_0"] == 28_311_552  # the tied embeddings / LM head stay on a fast kernel, not Q6_K
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [first.path.name]  # no temporary left behind
    made = first.path.stat().st_mtime_ns
    again = weights.plan(BUNDLED, "auto", tmp_path)
    assert again == first and again.path.stat().st_mtime_ns == made


def test_the_cache_key_follows_the_source_file(tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(BUNDLED, copy)
    key = weights.cache_path(copy, "q4_0", "q5_0", tmp_path)
    os.utime(copy, ns=(1, 1))  # same bytes, another modification time: treated as another file
    assert weights.cache_path(copy, "q4_0", "q5_0", tmp_path) != key
    assert weights.cache_path(copy, "q8_0", "q8_0", tmp_path) != weights.cache_path(copy, "q4_0", "q8_0", tmp_path)
    assert weights.cache_path(copy, "q4_0", "q8_0", tmp_path) != weights.cache_path(copy, "q4_0", "q5_0", tmp_path)


def test_a_changed_source_file_leaves_no_stale_copy_behind(tmp_path):
    """A reinstalled or rewritten file has another key; its old copies go when the new one is made, while copies
    of the same bytes at another path, and temporary files of builds still in progress, stay."""
    source, elsewhere = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path in (source, elsewhere):
        path.parent.mkdir()
        shutil.copyfile(BUNDLED, path)
    cache = tmp_path / "cache"
    old = weights.plan(source, "q4_0", cache).path
    other_path = weights.plan(elsewhere, "q4_0", cache).path
    killed, running = cache / "weights" / ".tmp-killed.gguf", cache / "weights" / ".tmp-running.gguf"
    killed.write_bytes(b"half a file")
    running.write_bytes(b"a build in another process")
    os.utime(killed, (1, 1))
    os.utime(source, ns=(2, 2))  # as a reinstall does: the same path, another identity
    new = weights.plan(source, "q4_0", cache).path
    assert new != old and new.is_file()
    assert sorted(p.name for p in (cache / "weights").iterdir()) == sorted([new.name, other_path.name, running.name])
    assert weights.plan(source, "q4_0", cache).path == new  # reused, nothing made or removed


def test_explicit_layouts_and_original(tmp_path):
    assert weights.plan(BUNDLED, "original", tmp_path).path == BUNDLED
    q8 = weights.plan(BUNDLED, "q8_0", tmp_path)
    assert q8.requantized and weights.main_type(weights.tensor_types(q8.path)) == "q8_0"
    assert q8.description == "q8_0 (requantized from q4_1)"
    q4 = weights.plan(BUNDLED, "q4_0", tmp_path)
    assert weights.plan(q4.path, "q4_0", tmp_path).path == q4.path  # already q4_0: used as it is


def test_a_cache_file_that_fails_to_load_is_made_again(tmp_path, caplog):
    cached = weights.plan(BUNDLED, "auto", tmp_path).path
    size = cached.stat().st_size
    with cached.open("r+b") as f:
        f.truncate(4096)  # a damaged copy: the header is there, the tensors are not
    with caplog.at_level(logging.WARNING):
        model = load_model(small(tmp_path))
    try:
        assert model.weights == "q4_0, head q5_0 (requantized from q4_1)"
        assert cached.stat().st_size == size
        assert "failed to load" in caplog.text and "making it again" in caplog.text
    finally:
        model.close()


def test_an_unwritable_cache_runs_the_original_with_one_warning(tmp_path, caplog):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING):
        model = load_model(small(blocked))
    try:
        assert model.weights == "q4_1" and model.runner is not None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "original q4_1 weights, slower" in warnings[0].getMessage()
    finally:
        model.close()


@pytest.mark.parametrize("path", ["/v1/models", "/slm/info"])
def test_the_running_layout_is_visible(server, path):
    body = httpx.get(f"{server.url}{path}").json()
    shown = body["data"][0]["weights"] if path == "/v1/models" else body["weights"]
    assert shown == "q4_0, head q5_0 (requantized from q4_1)"


def test_score_gives_the_logits_greedy_decoding_chose(tmp_path):
    """weights_fidelity's forced agreement stands on runner.score: fed a greedy answer, it must pick it again."""
    model = load_model(small(tmp_path, weights="original"))
    try:
        prompt = model.tokenizer.encode("The capital of France is", add_special=False)
        answer = model.engine.generate({"a": prompt}, SamplingParams(max_tokens=12, temperature=0))["a"]
        logits = model.runner.score(prompt + answer[:-1], len(prompt) - 1)
        assert logits.shape == (len(answer), model.tokenizer.vocab_size)
        assert (logits.argmax(1) == answer).mean() >= 0.9  # a prefill batch may flip a near-tie, rarely
        with pytest.raises(ValueError, match="score needs"):
            model.runner.score(prompt, 0)
    finally:
        model.close()
