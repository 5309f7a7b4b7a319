"""The command line on the bundled model: generate streams an answer, bench measures a server."""

import json
import subprocess
import sys

import httpx

from slmserve.tools.launch import free_port, wait_healthy


def slmserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slmserve.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_generate_prints_the_answer_and_its_speed():
    r = slmserve("generate", "What is the capital of France?", "--max-tokens", "12", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 5
    assert "tokens, first after" in r.stderr and "tok/s" in r.stderr


def test_generate_refuses_a_bad_setting():
    r = slmserve("generate", "hi", "--model", "/nonexistent.gguf")
    assert r.returncode == 2 and "error: no model '/nonexistent.gguf'" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_counts_exactly_max_tokens_per_request_and_writes_json(server, tmp_path):
    out = tmp_path / "bench.json"
    r = slmserve(
        "bench", "--url", server.url, "--concurrency", "1,4", "--requests", "4", "--max-tokens", "16",
        "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert [lvl["concurrency"] for lvl in doc["results"]] == [1, 4]
    for lvl in doc["results"]:
        assert lvl["errors"] == 0 and lvl["completion_tokens"] == 4 * 16
        assert lvl["tokens_per_s"] > 0 and 0 < lvl["ttft_p50_s"] <= lvl["latency_p50_s"]
    assert "tok/s" in r.stdout


def test_bench_reports_errors_and_exits_non_zero(tmp_path):
    r = slmserve("bench", "--url", "http://127.0.0.1:9", "--concurrency", "1", "--requests", "2", timeout=60)
    assert r.returncode == 1 and "errors" in r.stderr


def test_models_names_the_file_and_the_layout_auto_runs(tmp_path):
    r = slmserve("models", "--cache-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in r.stdout
    assert "weights: q4_1; auto runs q4_0, head q5_0 (79% of the weights (q4_1) miss AVX2's fast kernels)" in r.stdout
    assert f"made on first start into {tmp_path}/weights" in r.stdout


def test_serve_takes_model_more_than_once_and_refuses_two_models_of_one_name():
    r = slmserve("serve", "--model", "smollm2-135m-instruct", "--model", "smollm2-135m-instruct", timeout=60)
    assert r.returncode == 2 and "two models are served as 'smollm2-135m-instruct'" in r.stderr
    assert "Traceback" not in r.stderr
    port = free_port()
    cli = [sys.executable, "-m", "slmserve.cli", "serve", "--port", str(port), "--max-running", "2"]
    proc = subprocess.Popen([*cli, "--model", "smollm2-135m-instruct", "--model", "second=smollm2-135m-instruct"])
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 120)
        names = [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]]
        assert names == ["smollm2-135m-instruct", "second"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_exits_at_once_with_the_reason_when_its_model_is_not_there():
    r = slmserve("serve", "--model", "/nonexistent.gguf", timeout=60)
    assert r.returncode == 2 and "Error: no model '/nonexistent.gguf'" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_keeps_bracketed_words_that_rich_would_eat():
    r = slmserve("serve", "--help", timeout=60)
    assert r.returncode == 0 and "slmserve[torch]" in r.stdout.replace("\n", " ").replace("│", "")
