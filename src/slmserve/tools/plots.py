"""Shared matplotlib helpers, the benchmark chart (`slmserve bench --plot`, `slmserve plot-bench`) and compare's.

matplotlib is the `slmserve[tools]` extra: it is imported inside these functions only, on the Agg backend (files,
no display), so the server and `import slmserve.cli` never load it.
"""

from __future__ import annotations

import io
import json
import re
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


def save(fig: Any, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Write the figure as a PNG and free it. rect: the part of the figure the panels are laid out in (figure
    fractions: left, bottom, right, top), leaving the rest to a figure legend.

    The picture goes through a 256-colour palette (Pillow, matplotlib's own dependency): a chart has few colours,
    and the file shrinks to a third (~40 KB), small enough to keep examples in the repository.
    """
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
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


def wrap(name: str, width: int) -> str:
    """name on lines of at most width characters, broken after - . _ / where it can be (model names have no
    spaces to break at), inside a piece only where a piece alone is longer."""
    lines = [""]
    for piece in re.findall(r"[^-._/]*[-._/]?", name):
        while len(piece) > width:
            if lines[-1]:
                lines.append("")
            lines[-1], piece = piece[:width], piece[width:]
            lines.append("")
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line for line in lines if line)


def compare_chart(rows: list[dict], levels: list[int], path: Path) -> Path:
    """`slmserve compare`'s bar charts: tok/s and TTFT p50 grouped by concurrency; load time, memory, file size and
    score by model (rows as tools/compare.py makes them).

    A model keeps its colour in every panel and is named once, in a legend above the panels, off every bar; a
    long name is wrapped there, not squeezed under bars. The values are printed on the bars.
    """
    fig, axes = figure(2, 3, width=4.0, height=3.0)
    width = 0.8 / len(rows)
    for ax, key, scale, title in (
        (axes[0], "tokens_per_s", 1, "tokens/s (all requests, median of rounds)"),
        (axes[1], "ttft_p50_s", 1000, "TTFT p50 (ms)"),
    ):
        for i, r in enumerate(rows):
            xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(levels))]
            bars = ax.bar(xs, [b[key] * scale for b in r["bench"]], width, color=f"C{i}", label=r["label"])
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the values on the bars
    singles = [
        ("load time (s)", [r["load_s"] for r in rows], "%.1f"),
        ("resident MiB at peak", [r["rss_peak_mib"] for r in rows], "%.0f"),
        ("file MiB", [(r["file_size_bytes"] or 0) / 2**20 for r in rows], "%.0f"),
        ("score (share of questions)", [r["score"] for r in rows], "%.2f"),
    ]
    for ax, (title, values, fmt) in zip(axes[2:], singles, strict=True):
        bars = ax.bar(range(len(rows)), values, color=[f"C{i}" for i in range(len(rows))])
        ax.bar_label(bars, fmt=fmt, fontsize=7)
        ax.set_xticks([])  # the legend names the colours
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, max([*values, 1e-9]) * 1.15)
    axes[-1].set_ylim(0, 1.1)
    return save(fig, path, rect=(0, 0, 1, _legend_above(fig, axes[0], [r["label"] for r in rows])))


def _legend_above(fig, ax, names: list[str]) -> float:
    """The figure's title, and under it a legend of the models in as many columns as fit its width; returns the
    figure fraction left to the panels below them."""
    # Plain text, not suptitle: tight_layout would keep room for a suptitle above the room given to the legend.
    fig.text(0.5, 1 - 0.1 / fig.get_figheight(), "slmserve compare", ha="center", va="top", fontsize=11)
    handles = ax.get_legend_handles_labels()[0]
    wrapped = [wrap(n, 40) for n in names]
    renderer = fig.canvas.get_renderer()
    below_title = 1 - 0.35 / fig.get_figheight()
    for columns in range(len(names), 0, -1):
        legend = fig.legend(handles, wrapped, loc="upper center", bbox_to_anchor=(0.5, below_title), ncols=columns,
                            fontsize=8, frameon=False)  # fmt: skip
        box = legend.get_window_extent(renderer)
        if box.width <= 0.96 * fig.bbox.width or columns == 1:
            break
        legend.remove()
    return (box.y0 - 6) / fig.bbox.height  # 6 pixels between the legend and the panels' titles
