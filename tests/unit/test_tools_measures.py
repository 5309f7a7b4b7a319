"""The tools' pure parts, no model: text measures, histogram quantiles, /metrics rows, result files, the CLI's
parsing, and matplotlib staying out of the default install."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from slmserve.cli import app
from slmserve.cli.tools import numbers
from slmserve.tools import compare, explore, monitor, plots
from slmserve.tools.measures import bucket_deltas, distinct_n, histogram_quantile, repetition_rate, words

DOCS_BENCH = Path(__file__).resolve().parents[2] / "docs" / "bench"


def test_words_split_punctuation_and_ignore_case():
    assert words("The cat, the CAT!") == ["the", "cat", ",", "the", "cat", "!"]


def test_distinct_n_measures_diversity_across_samples():
    assert distinct_n(["a b c", "d e f"], 1) == 1.0
    assert distinct_n(["a b c d", "a b c d"], 1) == 0.5  # identical samples: each word counted twice
    assert distinct_n(["a b c d"] * 4, 2) == 0.25
    assert distinct_n(["a b", "a c"], 2) == 1.0
    assert distinct_n(["", "x"], 2) == 0.0  # no bigram at all


def test_repetition_rate_counts_trigrams_seen_before_in_the_same_sample():
    assert repetition_rate("one two three four five") == 0.0
    assert repetition_rate("a b c a b c") == 0.25  # abc bca cab abc: the last one repeats
    assert repetition_rate("go go go go go go") == 0.75  # a loop
    assert repetition_rate("too short") == 0.0


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 0.0), (0.5, 10.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.3)  # halfway through (0.1, 0.5]
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.48)
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 4.0)]) == 1.0  # in +Inf: the largest finite bound
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None  # nothing observed
    assert histogram_quantile(0.5, []) is None


def test_bucket_deltas_keep_the_interval_and_survive_a_restart():
    before = [(0.1, 2.0), (1.0, 5.0), (float("inf"), 5.0)]
    after = [(0.1, 3.0), (1.0, 9.0), (float("inf"), 10.0)]
    assert bucket_deltas(before, after) == [(0.1, 1.0), (1.0, 4.0), (float("inf"), 5.0)]
    restarted = [(0.1, 1.0), (1.0, 1.0), (float("inf"), 1.0)]
    assert bucket_deltas(after, restarted) == restarted
    assert bucket_deltas([], after) == after


METRICS = """\
# TYPE slmserve_generation_tokens counter
slmserve_generation_tokens_total {tokens}
# TYPE slmserve_requests_running gauge
slmserve_requests_running 3.0
# TYPE slmserve_requests_waiting gauge
slmserve_requests_waiting 1.0
# TYPE slmserve_time_to_first_token_seconds histogram
slmserve_time_to_first_token_seconds_bucket{{le="0.1"}} {fast}
slmserve_time_to_first_token_seconds_bucket{{le="1.0"}} {total}
slmserve_time_to_first_token_seconds_bucket{{le="+Inf"}} {total}
slmserve_time_to_first_token_seconds_count {total}
slmserve_time_to_first_token_seconds_sum 1.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 314572800.0
"""


def test_monitor_row_from_two_scrapes():
    prev = monitor.parse(METRICS.format(tokens=100.0, fast=0.0, total=4.0, cpu=10.0), at=50.0)
    cur = monitor.parse(METRICS.format(tokens=300.0, fast=2.0, total=6.0, cpu=11.5), at=52.0)
    r = monitor.row(prev, cur, start=50.0)
    assert r["elapsed_s"] == 2.0 and r["tokens_per_s"] == 100.0
    assert (r["running"], r["waiting"]) == (3.0, 1.0)
    # the interval's 2 new observations, both in (0, 0.1]: not the 4 slower ones from before it
    assert r["ttft_p50_s"] == pytest.approx(0.05) and r["ttft_p95_s"] == pytest.approx(0.095)
    assert r["itl_p50_s"] is None  # a histogram the server does not export
    assert r["cpu_percent"] == pytest.approx(75.0) and r["rss_mib"] == 300.0


def test_monitor_adds_up_labelled_series():
    text = 'slmserve_requests_running{model="a"} 2.0\nslmserve_requests_running{model="b"} 3.0\n'
    text += "# TYPE h histogram\n"
    for model, n in (("a", 1.0), ("b", 2.0)):
        text += f'h_bucket{{model="{model}",le="1.0"}} {n}\nh_bucket{{model="{model}",le="+Inf"}} {n}\n'
    scrape = monitor.parse(text, at=0.0)
    assert scrape.values["slmserve_requests_running"] == 5.0
    assert scrape.buckets["h"] == [(1.0, 3.0), (float("inf"), 3.0)]


def test_monitor_csv_leaves_missing_figures_empty(tmp_path):
    prev = monitor.parse(METRICS.format(tokens=0.0, fast=0.0, total=0.0, cpu=1.0), at=0.0)
    cur = monitor.parse(METRICS.format(tokens=10.0, fast=0.0, total=0.0, cpu=1.0), at=1.0)
    path = monitor.write_csv([monitor.row(prev, cur, 0.0)], tmp_path / "m.csv")
    header, line = path.read_text().splitlines()
    assert header.split(",") == monitor.FIELDS
    values = dict(zip(monitor.FIELDS, line.split(","), strict=True))
    assert values["tokens_per_s"] == "10.0" and values["itl_p50_s"] == ""


def test_explore_grid_and_summary():
    config = explore.ExploreConfig("hi", [0.0, 1.0], [0, 10], [0.9], samples=2, max_tokens=8, seed=0)
    assert config.grid()[1] == {"temperature": 0.0, "top_k": 10, "top_p": 0.9} and len(config.grid()) == 4
    samples = [{"text": "a b c", "tokens": 3, "logprobs": [-1.0, -2.0]}, {"text": "a b c", "tokens": 5, "logprobs": []}]
    row = explore.summarize(config.grid()[0], samples)
    assert row["distinct_1"] == 0.5 and row["mean_length"] == 4 and row["mean_logprob"] == -1.5
    assert row["samples"] == ["a b c", "a b c"] and row["temperature"] == 0.0


def test_compare_scores_whole_keywords():
    assert compare.correct("The capital is Paris.", ("paris",))
    assert not compare.correct("Parisian food", ("paris",))
    assert compare.correct("There are 7 days.", ("seven", "7"))
    assert all(keywords for _, keywords in compare.QUESTIONS)


def test_compare_labels_keep_clashing_names_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "m.gguf").write_bytes(b"x")
    first, second = str(tmp_path / "a" / "m.gguf"), str(tmp_path / "b" / "m.gguf")
    assert compare.labels([first, second]) == [first, second]
    assert compare.labels([first, "smollm2-135m-instruct"]) == ["m", "SmolLM2-135M-Instruct.Q4_1"]


def test_bench_results_load_from_bench_json_and_summaries(tmp_path):
    runs = plots.load_bench_results([DOCS_BENCH / "slmserve.json", DOCS_BENCH / "summary.json"])
    labels = [label for label, _ in runs]
    assert labels[0] == "slmserve (slmserve)" and "slmserve (summary)" in labels  # the same label, told apart
    assert all(results and "tokens_per_s" in results[0] for _, results in runs)
    medians = plots.load_bench_results([DOCS_BENCH / "peer" / "summary.json"])  # make bench's medians over rounds
    assert [label for label, _ in medians][:2] == ["slmserve", "llama-server"]
    assert [r["concurrency"] for r in medians[0][1]] == [1, 8, 32, 64]


def test_a_file_that_is_no_bench_result_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"label": "x"}')
    with pytest.raises(plots.BenchFileError, match="bad.json: not a `slmserve bench --json` result"):
        plots.load_bench_results([bad])
    result = CliRunner().invoke(app, ["plot-bench", str(bad), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "bad.json: not a" in result.output


def test_plot_bench_draws_saved_results(tmp_path):
    out = tmp_path / "peer.png"
    files = [str(DOCS_BENCH / "slmserve.json"), str(DOCS_BENCH / "llama-cpp-python.json")]
    result = CliRunner().invoke(app, ["plot-bench", *files, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_numbers_parse_and_check_ranges():
    assert numbers("0, 0.5,1", float, "--t", 0, 2) == [0.0, 0.5, 1.0]
    for bad in ("0,x", "3", "", "0"):
        with pytest.raises(typer.BadParameter):
            numbers(bad, float, "--t", 0, 2, low_open=bad == "0")


@pytest.mark.parametrize(
    "args",
    [
        ["explore", "--prompt", "hi", "--out", "x"],
        ["monitor", "--url", "http://127.0.0.1:9", "--out", "x"],
        ["compare", "--models", "smollm2-135m-instruct", "--out", "x"],
        ["plot-bench", str(DOCS_BENCH / "slmserve.json"), "--out", "x.png"],
        ["bench", "--url", "http://127.0.0.1:9", "--plot", "x.png"],
    ],
)
def test_without_matplotlib_the_tools_say_which_extra_to_install(monkeypatch, tmp_path, args):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "pip install 'slmserve[tools]'" in result.output
    assert not (tmp_path / "x").exists()  # it stopped before doing any work


def test_the_default_install_never_imports_matplotlib():
    code = (
        "import sys, slmserve.cli, slmserve.tools.explore, slmserve.tools.monitor, slmserve.tools.compare; "
        "print([m for m in ('torch', 'ray', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []
