"""`slmserve explore`: one prompt under a grid of sampling settings, and how each measure moves with each one.

Per setting (temperature x top_k x top_p), `samples` answers from /v1/chat/completions with logprobs: diversity
across the samples (distinct-1/2), mean length, repetition within a sample, mean token logprob. Sample i of every
setting uses seed + i, so settings differ by their parameters only, not by luck.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress

from slmserve.tools import plots
from slmserve.tools.measures import distinct_n, mean, repetition_rate

PARAMS = ("temperature", "top_k", "top_p")
MEASURES = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "mean_length": "mean length (tokens)",
    "repetition_rate": "repetition rate",
    "mean_logprob": "mean token logprob",
}
_PARALLEL = 8  # requests in flight: the server batches them, and a remote one is not flooded


class ExploreError(RuntimeError):
    """The server refused a request; the message says why."""


@dataclass
class ExploreConfig:
    prompt: str
    temperatures: list[float]
    top_ks: list[int]
    top_ps: list[float]
    samples: int
    max_tokens: int
    seed: int | None

    def grid(self) -> list[dict]:
        """Every combination of the parameters, temperature slowest."""
        combos = itertools.product(self.temperatures, self.top_ks, self.top_ps)
        return [dict(zip(PARAMS, combo, strict=True)) for combo in combos]

    def values(self, param: str) -> list:
        return {"temperature": self.temperatures, "top_k": self.top_ks, "top_p": self.top_ps}[param]


async def _sample(client: httpx.AsyncClient, url: str, config: ExploreConfig, setting: dict, i: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": config.prompt}],
        "max_tokens": config.max_tokens,
        "logprobs": True,
        **setting,
    }
    if config.seed is not None:
        body["seed"] = config.seed + i
    resp = await client.post(f"{url}/v1/chat/completions", json=body)
    if resp.status_code != 200:
        raise ExploreError(f"{setting}: HTTP {resp.status_code}: {resp.text[:300]}")
    doc = resp.json()
    choice = doc["choices"][0]
    logprobs = [t["logprob"] for t in ((choice.get("logprobs") or {}).get("content") or [])]
    tokens = (doc.get("usage") or {}).get("completion_tokens") or len(logprobs)
    return {"text": choice["message"].get("content") or "", "tokens": tokens, "logprobs": logprobs}


def summarize(setting: dict, samples: list[dict]) -> dict:
    """One setting's row: its parameters, the measures, and the sample texts."""
    texts = [s["text"] for s in samples]
    return {
        **setting,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "mean_length": mean([s["tokens"] for s in samples]),
        "repetition_rate": mean([repetition_rate(t) for t in texts]),
        "mean_logprob": mean([m for s in samples if (m := mean(s["logprobs"])) is not None]),
        "samples": texts,
    }


async def sweep(url: str, config: ExploreConfig) -> list[dict]:
    """All settings' samples, _PARALLEL requests at a time, with a progress bar; one row per setting."""
    grid = config.grid()
    gate = asyncio.Semaphore(_PARALLEL)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)) as client:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(
                f"{len(grid)} settings x {config.samples} samples", total=len(grid) * config.samples
            )

            async def one(setting: dict, i: int) -> dict:
                async with gate:
                    sample = await _sample(client, url, config, setting, i)
                    progress.advance(task)
                    return sample

            samples = await asyncio.gather(*(one(s, i) for s in grid for i in range(config.samples)))
    n = config.samples
    return [summarize(s, samples[k * n : (k + 1) * n]) for k, s in enumerate(grid)]


def run_explore(url: str, config: ExploreConfig, out: Path, source: str) -> list[Path]:
    """Sweep, then write explore.json, explore.md and one PNG per parameter given more than one value."""
    rows = asyncio.run(sweep(url, config))
    out.mkdir(parents=True, exist_ok=True)
    pngs = [plot_param(rows, config, p, out / f"explore_{p}.png") for p in PARAMS if len(config.values(p)) > 1]
    doc = {"source": source, "config": asdict(config), "measures": MEASURES, "settings": rows}
    (out / "explore.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "explore.md").write_text(markdown(rows, config, source, pngs))
    return [out / "explore.json", out / "explore.md", *pngs]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(rows: list[dict], config: ExploreConfig, source: str, pngs: list[Path]) -> str:
    """A readable report: the settings table, the plots, then every setting's samples."""
    lines = [
        "# slmserve explore",
        "",
        f"Prompt: {config.prompt!r} — {source}, {config.samples} samples per setting, at most {config.max_tokens} "
        f"tokens, seed {config.seed}.",
        "",
        "| " + " | ".join([*PARAMS, *MEASURES.values()]) + " |",
        "|" + "---:|" * (len(PARAMS) + len(MEASURES)),
    ]
    lines += ["| " + " | ".join([*(str(r[p]) for p in PARAMS), *(_fmt(r[m]) for m in MEASURES)]) + " |" for r in rows]
    lines += ["", *(f"![{png.stem}]({png.name})" for png in pngs), "", "## Samples"]
    for r in rows:
        lines += ["", "### " + ", ".join(f"{p}={r[p]}" for p in PARAMS), ""]
        lines += [f"{i}. {' '.join(text.split()) or '(empty)'}" for i, text in enumerate(r["samples"], 1)]
    return "\n".join(lines) + "\n"


def plot_param(rows: list[dict], config: ExploreConfig, param: str, path: Path) -> Path:
    """Each measure against one parameter: a thin line per combination of the others, their mean in bold."""
    values = config.values(param)
    others = [p for p in PARAMS if p != param]
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault(tuple(r[p] for p in others), {})[r[param]] = r
    fig, axes = plots.figure(2, 2, width=4.0, height=2.8, title=f"explore: the measures against {param}")
    panels = [("distinct_1", "distinct_2"), ("mean_length",), ("repetition_rate",), ("mean_logprob",)]
    xs = list(range(len(values)))
    for ax, measures in zip(axes, panels, strict=True):
        for k, measure in enumerate(measures):
            colour = f"C{k}"
            series = [[g[v][measure] if v in g else None for v in values] for g in groups.values()]
            for ys in series:
                ax.plot(xs, [float("nan") if y is None else y for y in ys], color=colour, alpha=0.25, lw=0.8)
            means = [mean([ys[i] for ys in series if ys[i] is not None]) for i in xs]
            ax.plot(
                xs, [float("nan") if y is None else y for y in means], "o-", color=colour, lw=2, label=MEASURES[measure]
            )
        ax.set_title(" / ".join(MEASURES[m] for m in measures), fontsize=9)
        ax.set_xticks(xs, [_tick(param, v) for v in values])
        ax.set_xlabel(param)
        if len(measures) > 1:
            ax.legend(fontsize=7)
    return plots.save(fig, path)


def _tick(param: str, value) -> str:
    off = (param == "top_k" and value in (0, -1)) or (param == "top_p" and value == 1.0)
    return f"{value}\n(off)" if off else str(value)
