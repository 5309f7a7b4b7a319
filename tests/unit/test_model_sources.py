"""Which engine a model string leads to, and the errors for combinations that cannot work."""

from __future__ import annotations

import pytest

from slmserve.engine.loader import load_model
from slmserve.models.registry import resolve_model
from slmserve.settings import Settings


def test_each_kind_of_model_string_is_recognised(tmp_path):
    assert resolve_model("smollm2-135m-instruct").format == "gguf"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert (resolve_model(str(gguf)).format, resolve_model(str(gguf)).path) == ("gguf", gguf)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "hf")).format == "hf"
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (hub.format, hub.path, hub.name) == ("hf", None, "HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.parametrize("model", ["models/missing.gguf", "no-such-model", "a/b/c"])
def test_a_missing_model_is_a_readable_error(model):
    with pytest.raises(FileNotFoundError, match="no model"):
        resolve_model(model)


def test_a_directory_without_config_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_llama_cpp_refuses_what_it_cannot_run_and_adapters_that_are_not_there(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="needs a GGUF file"):
        load_model(Settings(model=str(tmp_path), engine="llama.cpp"))
    with pytest.raises(ValueError, match="not a peft adapter directory"):
        load_model(Settings(lora=[f"x={tmp_path / 'missing'}"]))
