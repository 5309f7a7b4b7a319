"""The tools on the bundled model, tiny sizes: explore, monitor (with Ctrl-C), compare of two GGUF files, and the
benchmark chart. Each run is checked by the files it writes: PNGs that are real pictures, JSON, Markdown, CSV."""

import csv
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from matplotlib import image

from slmserve.models import weights
from slmserve.models.registry import resolve_model_path

DOCS_BENCH = Path(__file__).resolve().parents[2] / "docs" / "bench"
SMALL_SERVER = ["--max-running", "4", "--ctx-size", "1024"]  # loads faster than the default 32 x 2048 cells


def slmserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slmserve.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_png(path, min_bytes: int = 10_000) -> None:
    """A PNG matplotlib reads back, of a useful size, with a drawing on it (not one flat colour)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert min_bytes < len(data) < 250_000, (path, len(data))
    pixels = image.imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500, pixels.shape
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # lines, text, several colours


@contextmanager
def traffic(url: str, workers: int = 2, max_tokens: int = 12) -> Iterator[None]:
    """Chat requests flowing from `workers` threads for as long as the block runs; it starts once one has finished."""
    stop, flowing = threading.Event(), threading.Event()

    def loop() -> None:
        body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": max_tokens}
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
                flowing.set()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        assert flowing.wait(timeout=120)
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)


def test_explore_starts_a_server_on_the_model_and_writes_measures_and_plots(tmp_path):
    r = slmserve(
        "explore", "--prompt", "Name a colour.", "--out", str(tmp_path), "--temperatures", "0,1.0", "--top-k", "0,10",
        "--top-p", "1.0", "--samples", "2", "--max-tokens", "8", *SMALL_SERVER,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "explore.json").read_text())
    assert doc["source"] == "model smollm2-135m-instruct" and doc["config"]["samples"] == 2
    rows = doc["settings"]
    assert [(s["temperature"], s["top_k"]) for s in rows] == [(0.0, 0), (0.0, 10), (1.0, 0), (1.0, 10)]
    for s in rows:
        assert set(explore_fields()) <= set(s) and len(s["samples"]) == 2
        assert 0 < s["mean_length"] <= 8 and s["mean_logprob"] < 0 and 0 <= s["repetition_rate"] <= 1
    greedy, sampled = rows[:2], rows[2:]
    for s in greedy:  # the same answer twice: every word is counted twice
        assert s["samples"][0] == s["samples"][1] and s["distinct_1"] <= 0.5
    assert min(s["mean_logprob"] for s in greedy) > max(s["mean_logprob"] for s in sampled)
    md = (tmp_path / "explore.md").read_text()
    assert "| temperature | top_k | top_p | distinct-1 |" in md and md.count("### temperature=") == 4
    assert "![explore_temperature](explore_temperature.png)" in md and rows[0]["samples"][0].split()[0] in md
    assert_png(tmp_path / "explore_temperature.png")
    assert_png(tmp_path / "explore_top_k.png")
    assert not (tmp_path / "explore_top_p.png").exists()  # one value: nothing moves


def explore_fields() -> list[str]:
    return ["temperature", "top_k", "top_p", "distinct_1", "distinct_2", "mean_length", "repetition_rate",
            "mean_logprob", "samples"]  # fmt: skip


def test_explore_talks_to_a_running_server(server, tmp_path):
    r = slmserve(
        "explore", "--url", server.url, "--prompt", "Say hello.", "--out", str(tmp_path), "--temperatures", "0.5,1.5",
        "--top-k", "0", "--top-p", "1.0", "--samples", "2", "--max-tokens", "8", "--seed", "7",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "explore.json").read_text())
    assert doc["source"] == server.url and len(doc["settings"]) == 2
    assert all(s["mean_logprob"] < 0 and len(s["samples"]) == 2 for s in doc["settings"])
    assert_png(tmp_path / "explore_temperature.png")


def test_monitor_shows_tokens_per_second_while_requests_flow(server, tmp_path):
    with traffic(server.url):
        r = slmserve("monitor", "--url", server.url, "--duration", "4", "--interval", "0.5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    with (tmp_path / "monitor.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 6
    assert max(float(row["tokens_per_s"]) for row in rows) > 0
    assert max(float(row["running"]) for row in rows) >= 1
    assert any(row["ttft_p50_s"] or row["itl_p50_s"] for row in rows)  # the histograms' deltas have medians
    assert max(float(row["cpu_percent"]) for row in rows) > 0 and min(float(row["rss_mib"]) for row in rows) > 50
    assert "tok/s" in r.stdout and "RSS MiB" in r.stdout  # the live table's last frame
    assert_png(tmp_path / "monitor.png")


def test_monitor_ends_cleanly_on_ctrl_c_and_still_writes_its_files(server, tmp_path):
    cmd = [sys.executable, "-m", "slmserve.cli", "monitor", "--url", server.url, "--interval", "0.3"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "watching" in proc.stderr.readline()  # its first scrape is done: it is sampling now
    try:
        proc.wait(timeout=1.5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "wrote" in stdout
    assert len((tmp_path / "monitor.csv").read_text().splitlines()) >= 3  # header and the rows sampled
    assert_png(tmp_path / "monitor.png")


def test_monitor_says_when_there_is_no_server(tmp_path):
    r = slmserve("monitor", "--url", "http://127.0.0.1:9", "--duration", "1", "--out", str(tmp_path))
    assert r.returncode == 1 and "cannot read http://127.0.0.1:9/metrics" in r.stderr
    assert "Traceback" not in r.stderr


def test_compare_serves_two_gguf_files_one_after_the_other(tmp_path):
    bundled = resolve_model_path("smollm2-135m-instruct")
    q8 = tmp_path / "SmolLM2-135M-Instruct.Q8_0.gguf"
    weights.requantize(bundled, q8, "q8_0")
    out = tmp_path / "out"
    r = slmserve(
        "compare", "--models", f"smollm2-135m-instruct,{q8}", "--out", str(out), "--concurrency", "2",
        "--requests", "2", "--max-tokens", "8", "--serve-args", " ".join(SMALL_SERVER), timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "compare.json").read_text())
    first, second = doc["models"]
    assert (first["label"], second["label"]) == ("SmolLM2-135M-Instruct.Q4_1", "SmolLM2-135M-Instruct.Q8_0")
    assert first["file_size_bytes"] == bundled.stat().st_size and second["file_size_bytes"] == q8.stat().st_size
    for m in doc["models"]:
        assert m["load_s"] > 0 and 50 < m["rss_idle_mib"] <= m["rss_peak_mib"] < 4096
        (level,) = m["bench"]
        assert level["concurrency"] == 2 and level["errors"] == 0 and level["completion_tokens"] == 2 * 8
        assert level["tokens_per_s"] > 0 and level["ttft_p50_s"] > 0
        assert [a["question"] for a in m["answers"]] == doc["questions"] and len(doc["questions"]) >= 5
        assert all(a["answer"] for a in m["answers"])
        assert m["score"] == sum(a["correct"] for a in m["answers"]) / len(m["answers"])
    md = (out / "compare.md").read_text()
    assert "SmolLM2-135M-Instruct.Q8_0" in md and "tok/s c=2" in md and doc["questions"][0] in md
    assert_png(out / "compare.png")


def test_compare_refuses_an_unknown_model_before_starting_anything(tmp_path):
    r = slmserve("compare", "--models", "smollm2-135m-instruct,/nonexistent.gguf", "--out", str(tmp_path))
    assert r.returncode == 2 and "no model '/nonexistent.gguf'" in r.stderr
    assert not (tmp_path / "compare.json").exists()


def test_bench_plot_draws_this_run_beside_a_saved_one(server, tmp_path):
    out = tmp_path / "bench.png"
    r = slmserve(
        "bench", "--url", server.url, "--concurrency", "1,2", "--requests", "2", "--max-tokens", "8",
        "--label", "this run", "--plot", str(out), "--compare-json", f"{DOCS_BENCH}/llama-cpp-python.json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    assert_png(out)
