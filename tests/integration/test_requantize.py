"""`slmserve requantize`: the README's command, run as written, makes the GGUF file its examples serve."""

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from slmserve.cli import app as cli
from slmserve.models import weights
from slmserve.models.registry import resolve_model_path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_makes_every_gguf_file_its_examples_name(tmp_path, monkeypatch):
    text = README.read_text()
    (command,) = {line.strip() for line in text.splitlines() if line.strip().startswith("slmserve requantize ")}
    named = set(re.findall(r"\./[\w.-]+\.gguf", text))  # the files the examples serve, compare and deploy
    assert named == {"./SmolLM2-135M-Instruct.Q8_0.gguf"}
    monkeypatch.chdir(tmp_path)  # a fresh checkout's working directory: no such file yet
    result = CliRunner().invoke(cli, shlex.split(command, comments=True)[1:])
    assert result.exit_code == 0, result.output
    for path in named:
        assert weights.main_type(weights.tensor_types(Path(path))) == "q8_0"


def test_requantize_refuses_an_unknown_model_and_overwriting_the_model_itself(tmp_path):
    unknown = CliRunner().invoke(cli, ["requantize", str(tmp_path / "x.gguf"), "--model", "no-such-model"])
    assert unknown.exit_code == 2 and "no model 'no-such-model'" in unknown.output
    bundled = resolve_model_path("smollm2-135m-instruct")
    itself = CliRunner().invoke(cli, ["requantize", str(bundled)])
    assert itself.exit_code == 2 and "is the model itself" in itself.output
    assert not list(tmp_path.iterdir())
