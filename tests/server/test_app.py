"""The app without a model: health while loading or after a failed load, settings, and the CLI's flags."""

import os
import subprocess
import sys

import pydantic
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from slmserve.cli import app as cli
from slmserve.server.app import create_app
from slmserve.settings import Settings


def test_health_is_503_with_the_reason_when_the_model_cannot_load(tmp_path):
    settings = Settings(model=str(tmp_path / "missing.gguf"))
    with TestClient(create_app(settings)) as client:
        for _ in range(100):
            body = client.get("/health").json()
            if body["status"] != "loading":
                break
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert "missing.gguf" in r.json()["error"]
        # API calls say what is true, in OpenAI's shape: the load failed, and why; retrying will not help.
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"
        assert "could not be loaded" in r.json()["error"]["message"] and "missing.gguf" in r.json()["error"]["message"]
        assert "retry-after" not in r.headers


def test_a_file_that_is_not_a_gguf_is_refused_readably(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with TestClient(create_app(Settings(model=str(bad)))) as client:
        for _ in range(200):
            if client.get("/health").json()["status"] != "loading":
                break
        assert client.get("/health").json()["status"] == "error"


def test_settings_come_from_env_and_dotenv_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SLMSERVE_MAX_RUNNING=7\nSLMSERVE_PORT=9001\n")
    monkeypatch.setenv("SLMSERVE_PORT", "9002")
    s = Settings()
    assert (s.max_running, s.port) == (7, 9002)
    assert Settings(port=9003).port == 9003


def test_every_setting_is_a_serve_flag_with_its_env_var():
    result = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.output
        assert f"SLMSERVE_{name.upper()}" in result.output


def test_bad_flag_values_are_refused_before_anything_loads():
    r = subprocess.run(
        [sys.executable, "-m", "slmserve.cli", "serve", "--max-running", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr == "Error: --max-running = 0: Input should be greater than or equal to 1\n"


def test_list_settings_take_json_or_commas_on_the_command_line(monkeypatch):
    seen = {}
    monkeypatch.setattr("slmserve.terminal.run_chat_turns", lambda settings, *a, **kw: seen.update(s=settings) or 0)
    for flag, words in [("spam,eggs", ["spam", "eggs"]), ('["a b", "c"]', ["a b", "c"])]:
        seen.clear()
        result = CliRunner().invoke(cli, ["generate", "hi", "--blocked-words", flag])
        assert result.exit_code == 0, result.output
        assert seen["s"].blocked_words == words


def test_the_openapi_document_names_metrics_and_slm_stream_by_their_real_media_types():
    with TestClient(create_app(Settings(model="/nonexistent.gguf"))) as client:
        paths = client.get("/openapi.json").json()["paths"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    stream = paths["/slm/stream"]["post"]["responses"]["200"]["content"]
    assert "application/json" not in metrics and any(t.startswith("text/plain") for t in metrics)
    assert "application/json" not in stream and "text/event-stream" in stream


def test_max_waiting_0_is_refused_at_start_since_it_would_refuse_every_request():
    with pytest.raises(pydantic.ValidationError, match="max_waiting"):
        Settings(max_waiting=0)


def test_a_bad_env_value_is_one_line_naming_the_variable_not_a_traceback(tmp_path):
    env = {**os.environ, "SLMSERVE_PORT": "abc"}
    r = subprocess.run(
        [sys.executable, "-m", "slmserve.cli", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: SLMSERVE_PORT (env or .env) = 'abc': Input should be a valid integer, unable to parse string as an "
        "integer"
    ]


def test_list_settings_take_comma_separated_words_as_well_as_json(monkeypatch):
    monkeypatch.setenv("SLMSERVE_BLOCKED_WORDS", "hate, violence")
    assert Settings().blocked_words == ["hate", "violence"]
    monkeypatch.setenv("SLMSERVE_BLOCKED_WORDS", '["spam"]')
    assert Settings().blocked_words == ["spam"]
    monkeypatch.setenv("SLMSERVE_BLOCKED_WORDS", "")
    assert Settings().blocked_words == []  # the filter off


def test_an_unknown_slmserve_variable_is_a_warning_naming_the_closest_setting(tmp_path):
    (tmp_path / ".env").write_text("SLMSERVE_MAX_RUNNIN=4\n")
    env = {**os.environ, "SLMSERVE_PROT": "9000", "SLMSERVE_PORT": "abc", "SLMSERVE_URL": "http://x"}
    r = subprocess.run(
        [sys.executable, "-m", "slmserve.cli", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    lines = r.stderr.strip().splitlines()
    assert "Warning: SLMSERVE_PROT is not a setting of slmserve and is ignored; did you mean SLMSERVE_PORT?" in lines
    assert (
        "Warning: SLMSERVE_MAX_RUNNIN is not a setting of slmserve and is ignored; did you mean SLMSERVE_MAX_RUNNING?"
        in lines
    )
    assert not any("SLMSERVE_URL" in line for line in lines)  # examples/request.sh's, not a server setting
    assert r.returncode == 2  # the bad SLMSERVE_PORT still stops it, after the warnings


def test_help_shows_each_settings_default_and_each_command_only_its_own_flags():
    env = {"COLUMNS": "1000", "TERM": "dumb"}  # one line a flag
    serve = CliRunner().invoke(cli, ["serve", "--help"], env=env).output
    assert "(env SLMSERVE_MAX_RUNNING; default: 32)" in serve
    assert "(env SLMSERVE_KV_CACHE_TYPE; default: q8_0)" in serve and "default: hate,violence" in serve
    for command in ("generate", "chat"):
        text = CliRunner().invoke(cli, [command, "--help"], env=env).output
        assert "--max-running" in text and "--blocked-words" in text  # the engine's and the filter's
        for server_only in ("--port", "--host", "--max-waiting", "--api-keys", "--drain-timeout"):
            assert server_only not in text, (command, server_only)
