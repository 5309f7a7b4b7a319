"""Shared matplotlib helpers, and the benchmark chart (`slmserve bench --plot`, `slmserve plot-bench`).

matplotlib is the `slmserve[tools]` extra: it is imported inside these functions only, on the Agg backend (files,
no display), so the server and `import slmserve.cli` never load it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

INSTALL_HINT = "this command draws PNGs with matplotlib, which is not installed: pip install 'slmserve[tools]'"


class ToolsMissing(RuntimeError):
    """matplotlib (the tools extra) is not installed."""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; ToolsMissing, with the pip command, when it is not installed."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ToolsMissing(INSTALL_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require() -> None:
    """Fail before the work, not after it: a sweep that runs for minutes and then cannot draw is lost time."""
    pyplot()


def figure(rows: int, cols: int, width: float = 4.2, height: float = 3.0, title: str | None = None) -> tuple:
    """A figure of rows x cols panels (axes always a flat list), in the tools' common size and style."""
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    if title:
        fig.suptitle(title, fontsize=11)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig, list(axes.flat)


def save(fig: Any, path: Path) -> Path:
    """Write the figure as a PNG and free it.

    The picture goes through a 256-colour palette (Pillow, matplotlib's own dependency): a chart has few colours,
    and the file shrinks to a third (~40 KB), small enough to keep examples in the repository.
    """
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    pyplot().close(fig)
    Image.open(buf).convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path


class BenchFileError(ValueError):
    """A file that is not a saved benchmark result."""


def load_bench_results(paths: list[Path]) -> list[tuple[str, list[dict]]]:
    """(label, per-concurrency results) from `bench --json` files and scripts/bench_compare.py's summary.json.

    A label met twice (the rounds of one server) gets its file's name added, so every line stays tellable.
    """
    runs: list[tuple[str, Path, list[dict]]] = []
    for path in map(Path, paths):
        try:
            runs += [(label or path.stem, path, results) for label, results in _runs_in(json.loads(path.read_text()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BenchFileError(f"{path}: not a `slmserve bench --json` result ({type(exc).__name__}: {exc})") from exc
    labels = [label for label, _, _ in runs]
    return [(f"{label} ({path.stem})" if labels.count(label) > 1 else label, results) for label, path, results in runs]


def _runs_in(doc: dict | list) -> list[tuple[str | None, list[dict]]]:
    if isinstance(doc, dict) and "summary" in doc:  # bench_compare.py: medians over rounds, a row per server and level
        servers = dict.fromkeys(row["server"] for row in doc["summary"])
        return [(s, [row for row in doc["summary"] if row["server"] == s]) for s in servers]
    return [
        (run.get("label") or run.get("server"), run["results"]) for run in (doc if isinstance(doc, list) else [doc])
    ]


def bench_chart(runs: list[tuple[str, list[dict]]], path: Path, title: str = "slmserve bench") -> Path:
    """Throughput against concurrency, and TTFT p50 (solid) and p95 (dashed), one colour per run."""
    fig, (tps, ttft) = figure(1, 2, width=5.0, height=3.6, title=title)
    for i, (label, results) in enumerate(runs):
        ok = sorted((r for r in results if r.get("tokens_per_s")), key=lambda r: r["concurrency"])
        conc = [r["concurrency"] for r in ok]
        colour = f"C{i % 10}"
        tps.plot(conc, [r["tokens_per_s"] for r in ok], "o-", color=colour, label=label)
        ttft.plot(conc, [r["ttft_p50_s"] * 1000 for r in ok], "o-", color=colour)
        ttft.plot(conc, [r["ttft_p95_s"] * 1000 for r in ok], "s--", color=colour, alpha=0.7)
    # The colours are named on the left; this legend names the line styles.
    ttft.plot([], [], "o-", color="grey", label="p50")
    ttft.plot([], [], "s--", color="grey", label="p95")
    levels = sorted({r["concurrency"] for _, results in runs for r in results})
    for ax, ylabel in ((tps, "generated tokens/s (all requests)"), (ttft, "time to first token (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.legend(fontsize=7)
    tps.set_ylim(bottom=0)
    ttft.set_yscale("log")
    return save(fig, path)
