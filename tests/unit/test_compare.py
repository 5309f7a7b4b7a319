"""`slmserve compare` without servers: the busy machine warned of (a faked load average and processes), the models
measured in alternating rounds and combined into medians, and the chart's legend off the bars with long names
whole and readable (matplotlib's own layout, measured with its renderer)."""

from __future__ import annotations

import json

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from rich.console import Console

from slmserve.tools import compare, plots
from slmserve.tools.busy import OtherProcess, machine_busy


def test_a_busy_machine_is_named_and_an_idle_one_is_not():
    others = [
        OtherProcess(22702, "python -m pytest -q tests/integration", 1.47),
        OtherProcess(4242, "/usr/bin/python -m slmserve.cli serve --port 8000", 0.0),  # idle, but a server
        OtherProcess(7, "sleep 100", 0.01),
    ]
    reasons = machine_busy(lambda: (2.8, 2.4, 1.7), lambda: 2, lambda: others)
    assert reasons == [
        "load average 2.8 over the last minute on 2 cores",
        "pid 22702 at 147% of a core: python -m pytest -q tests/integration",
        "pid 4242 is another server: /usr/bin/python -m slmserve.cli serve --port 8000",
    ]
    assert machine_busy(lambda: (0.3, 0.2, 0.1), lambda: 2, lambda: [others[2]]) == []
    assert machine_busy(lambda: (0.9, 0.2, 0.1), lambda: 2, list) == []  # a job that just ended, fading
    only_load = machine_busy(lambda: (1.2, 0.2, 0.1), lambda: 2, list)
    assert only_load == ["load average 1.2 over the last minute on 2 cores"]


def _bench(level: int, tps: float) -> dict:
    return {
        "concurrency": level, "requests": 8, "errors": 0, "duration_s": 1.0, "completion_tokens": 64,
        "tokens_per_s": tps, "ttft_p50_s": 0.02, "ttft_p95_s": 0.03, "itl_p50_s": 0.01, "itl_p95_s": 0.02,
        "latency_p50_s": 0.5, "latency_p95_s": 0.6, "first_error": None,
    }  # fmt: skip


# Each model's tok/s at c=1 and c=8, round by round: b's second round was disturbed (issue #35's 8.9 vs 55.8).
TPS = {"a": [(100.0, 300.0), (104.0, 296.0), (98.0, 310.0)], "b": [(60.0, 55.8), (61.0, 8.9), (59.0, 54.0)]}

ANSWERS = [{"question": q, "answer": "Paris.", "correct": False} for q, _ in compare.QUESTIONS]


@pytest.fixture
def measured(monkeypatch):
    """run_compare over two fake models, three rounds; the order measure() was called in."""
    order = []

    def measure(model, label, config):
        rnd = sum(m == model for m in order)
        order.append(model)
        one, eight = TPS[model][rnd]
        return {
            "model": model, "label": label, "file_size_bytes": 2**20, "load_s": 1.0 + rnd, "rss_idle_mib": 100.0,
            "rss_peak_mib": 200.0 + rnd, "score": 0.5, "answers": ANSWERS, "bench": [_bench(1, one), _bench(8, eight)],
        }  # fmt: skip

    monkeypatch.setattr(compare, "measure", measure)
    monkeypatch.setattr(compare, "labels", list)
    monkeypatch.setattr(compare.busy, "machine_busy", lambda: ["load average 2.8 over the last minute on 2 cores"])
    return order


def test_models_alternate_round_by_round_and_the_figures_are_medians(measured, tmp_path):
    assert compare.schedule(2, 3) == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    config = compare.CompareConfig(models=["a", "b"], levels=[1, 8], max_tokens=64, requests=None, serve_args=[],
                                   rounds=3)  # fmt: skip
    console = Console(record=True, width=200)
    rows, _ = compare.run_compare(config, tmp_path, console)
    assert measured == ["a", "b", "a", "b", "a", "b"]
    a, b = rows
    assert [x["tokens_per_s"] for x in a["bench"]] == [100.0, 300.0]
    assert b["bench"][1]["tokens_per_s"] == 54.0 and b["bench"][1]["tokens_per_s_all"] == [55.8, 8.9, 54.0]
    assert (a["rounds"], a["load_s"], a["rss_peak_mib"]) == (3, 2.0, 202.0)
    assert a["bench"][0]["completion_tokens"] == 64 and type(a["bench"][0]["completion_tokens"]) is int
    said = console.export_text()
    assert "warning: the machine is busy" in said and "load average 2.8" in said
    assert "rounds disagree: b at c=8: 8.9 to 55.8 tok/s across rounds" in said
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert doc["busy"] and doc["spread"] == ["b at c=8: 8.9 to 55.8 tok/s across rounds"]
    md = (tmp_path / "compare.md").read_text()
    assert "**Not the models' own figures:** load average 2.8" in md and "| 54.0 (8.9–55.8) |" in md


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("count", [2, 4])
def test_the_legend_is_off_the_bars_and_long_names_do_not_collide(monkeypatch, tmp_path, count):
    figures = []
    save = plots.save

    def keep(fig, path, **kwargs):
        figures.append(fig)
        return save(fig, path, **kwargs)

    monkeypatch.setattr(plots, "save", keep)
    # Tall bars at the left, where the old legend sat; names as long as the paths given when two names clash.
    labels = [f"/home/someone/models/SmolLM2-135M-Instruct-finetuned-{i}.Q8_0.gguf" for i in range(count)]
    rows = [
        {"label": label, "load_s": 1.5, "rss_peak_mib": 1000.0, "file_size_bytes": 2**27, "score": 1.0,
         "bench": [_bench(1, 300.0), _bench(8, 290.0)]}
        for label in labels
    ]  # fmt: skip
    plots.compare_chart(rows, [1, 8], tmp_path / "compare.png")
    (fig,) = figures
    canvas = FigureCanvasAgg(fig)  # save() closed the figure's own; the layout stays in the figure
    canvas.draw()
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1  # whole, inside the picture
    for ax in fig.axes:
        assert not _overlap(box, ax.get_window_extent(renderer)), ax.get_title()
        assert not _overlap(box, ax.title.get_window_extent(renderer)), ax.get_title()
        for bar in ax.patches:
            assert not _overlap(box, bar.get_window_extent(renderer))
    # Each name once, whole, on lines of at most 40 characters, no two overlapping.
    texts = legend.get_texts()
    assert [t.get_text().replace("\n", "") for t in texts] == labels
    assert all(len(line) <= 40 for t in texts for line in t.get_text().split("\n"))
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert all(not _overlap(x, y) for i, x in enumerate(boxes) for y in boxes[i + 1 :])
