"""The tools' commands: bench (a load test), explore, monitor, compare, plot-bench.

The work modules are imported inside each command, so `slmserve --help` and `slmserve serve` load neither them
nor matplotlib.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from slmserve.settings import Settings

_err = Console(stderr=True)


def numbers(text: str, kind: type, name: str, low: float, high: float, low_open: bool = False) -> list:
    """Comma-separated values of one kind, each in [low, high] ((low, high] with low_open); BadParameter if not."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of {kind.__name__}s", param_hint=name
        ) from exc
    bad = [v for v in values if not (low < v <= high if low_open else low <= v <= high)]
    if not values or bad:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise typer.BadParameter(f"each value must be in {bounds}; got {text!r}", param_hint=name)
    return values


@contextmanager
def _tool_errors():
    """The tools' expected failures as one red line and an exit code (2: setup, 1: the run failed), no traceback."""
    import httpx

    from slmserve.tools.compare import CompareError
    from slmserve.tools.explore import ExploreError
    from slmserve.tools.launch import ServerFailed
    from slmserve.tools.monitor import MonitorError
    from slmserve.tools.plots import BenchFileError, ToolsMissing

    try:
        yield
    except (ToolsMissing, FileNotFoundError, BenchFileError) as exc:
        _err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (ExploreError, CompareError, ServerFailed, MonitorError, httpx.HTTPError) as exc:
        _err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _wrote(files: list[Path]) -> None:
    for f in files:
        typer.echo(f"wrote {f}")


def explore(
    prompt: Annotated[str, typer.Option(help="The user message every sample answers.")],
    out: Annotated[Path, typer.Option(help="Directory for explore.json, explore.md and the PNGs.")],
    url: Annotated[
        str | None, typer.Option(help="A running server's base URL. Without it, a server on --model is started.")
    ] = None,
    temperatures: Annotated[str, typer.Option(help="Comma-separated temperatures (0 = greedy).")] = "0,0.3,0.7,1.0,1.5",
    top_k: Annotated[str, typer.Option(help="Comma-separated top-k values (0 = off).")] = "0,10,50",
    top_p: Annotated[str, typer.Option(help="Comma-separated top-p values (1.0 = off).")] = "0.5,0.9,1.0",
    samples: Annotated[int, typer.Option(min=1, help="Answers per setting.")] = 4,
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per answer.")] = 64,
    seed: Annotated[int | None, typer.Option(help="Sample i of every setting uses seed + i.")] = 0,
    settings: Settings = None,
) -> None:
    """Sweep temperature x top-k x top-p over one prompt: diversity, length, repetition, logprob; JSON, MD, PNGs."""
    from slmserve.tools import launch, plots
    from slmserve.tools.explore import ExploreConfig, run_explore

    config = ExploreConfig(
        prompt=prompt,
        temperatures=numbers(temperatures, float, "--temperatures", 0, 2),
        top_ks=numbers(top_k, int, "--top-k", -1, 1_000_000),
        top_ps=numbers(top_p, float, "--top-p", 0, 1, low_open=True),
        samples=samples,
        max_tokens=max_tokens,
        seed=seed,
    )
    with _tool_errors():
        plots.require()
        if url:
            files = run_explore(url.rstrip("/"), config, out, source=url)
        else:
            with launch.serve([], env=launch.settings_env(settings)) as served:
                files = run_explore(served.url, config, out, source=f"model {settings.model}")
    _wrote(files)


def monitor(
    out: Annotated[Path, typer.Option(help="Directory for monitor.csv and monitor.png.")],
    url: Annotated[str, typer.Option(help="Base URL of a running slmserve.")] = "http://127.0.0.1:8000",
    duration: Annotated[float | None, typer.Option(min=0, help="Seconds to watch (default: until Ctrl-C).")] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between samples of /metrics.")] = 1.0,
) -> None:
    """Watch a server's /metrics live: tokens/s, queue, TTFT/ITL p50/p95, CPU, memory; CSV and a timeline PNG."""
    from slmserve.tools import plots
    from slmserve.tools.monitor import run_monitor

    with _tool_errors():
        plots.require()
        files = run_monitor(url.rstrip("/"), out, duration, interval)
    _wrote(files)


def compare(
    models: Annotated[str, typer.Option(help="Comma-separated models: known ids, GGUF files, HF directories or ids.")],
    out: Annotated[Path, typer.Option(help="Directory for compare.json, compare.md and compare.png.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels of the load test.")] = "1,8",
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per load-test request; most tokens per answer.")] = 64,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Load-test requests per level (default: 2 x concurrency, >= 8).")
    ] = None,
    serve_args: Annotated[
        str, typer.Option(help="More `slmserve serve` flags for every model, e.g. '--weights original'.")
    ] = "",
    rounds: Annotated[
        int, typer.Option(min=1, help="Rounds in which the models take turns (A, B, A, B); figures are medians.")
    ] = 2,
) -> None:
    """Serve each model in turn: size, load time, memory, tok/s and TTFT, scored answers; JSON, Markdown, PNG."""
    from slmserve.tools.compare import CompareConfig, run_compare

    config = CompareConfig(
        models=[m.strip() for m in models.split(",") if m.strip()],
        levels=numbers(concurrency, int, "--concurrency", 1, 1024),
        max_tokens=max_tokens,
        requests=requests,
        serve_args=shlex.split(serve_args),
        rounds=rounds,
    )
    with _tool_errors():
        rows, files = run_compare(config, out, _err)
    _wrote(files)
    if any(b["errors"] for r in rows for b in r["bench"]):
        raise typer.Exit(1)


def plot_bench(
    results: Annotated[list[Path], typer.Argument(help="JSON from `bench --json` or scripts/bench_compare.py.")],
    out: Annotated[Path, typer.Option(help="The PNG to write.")],
    title: Annotated[str, typer.Option(help="The chart's title.")] = "slmserve bench",
) -> None:
    """Draw saved benchmark results on one chart: tokens/s and TTFT p50/p95 against concurrency."""
    from slmserve.tools import plots

    with _tool_errors():
        runs = plots.load_bench_results(results)
        _wrote([plots.bench_chart(runs, out, title)])


def bench(
    url: Annotated[str, typer.Option(help="Base URL of an OpenAI-compatible server.")] = "http://127.0.0.1:8000",
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,8,32",
    requests: Annotated[int | None, typer.Option(help="Requests per level (default: 2 x concurrency, >= 8).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens each request generates.")] = 128,
    ignore_eos: Annotated[bool, typer.Option(help="Send ignore_eos and an EOS logit_bias: exactly max_tokens.")] = True,
    eos_token_ids: Annotated[str, typer.Option(help="Token ids to ban with --ignore-eos.")] = "0,2",
    model: Annotated[str | None, typer.Option(help="Model name to send (default: the server's first).")] = None,
    prompt: Annotated[str, typer.Option(help="The user message of every request.")] = "Tell me a story about a cat.",
    label: Annotated[str, typer.Option(help="Name of the server under test, for the report.")] = "server",
    response_format: Annotated[
        str | None, typer.Option(help="A response_format for every request: JSON, or @FILE holding it.")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw tokens/s and TTFT against concurrency into this PNG (needs the tools extra)."),
    ] = None,
    compare_json: Annotated[
        list[Path] | None, typer.Option(help="A saved `bench --json` result to draw beside this run; repeatable.")
    ] = None,
) -> None:
    """Load-test a server: aggregate tokens/s, TTFT, inter-token latency, latency, errors, per concurrency."""
    from slmserve.bench import BenchConfig, print_report, run_bench, write_json, write_plot

    others = _saved_runs(compare_json or []) if plot else []

    if response_format and response_format.startswith("@"):
        response_format = Path(response_format[1:]).read_text()

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    config = BenchConfig(
        url=url.rstrip("/"),
        levels=levels,
        requests=requests,
        max_tokens=max_tokens,
        ignore_eos=ignore_eos,
        eos_token_ids=[int(t) for t in eos_token_ids.split(",") if t.strip()],
        model=model,
        prompt=prompt,
        label=label,
        response_format=json.loads(response_format) if response_format else None,
    )
    results = asyncio.run(run_bench(config))
    print_report(config, results)
    if json_path:
        write_json(json_path, config, results)
    if plot:
        typer.echo(f"wrote {write_plot(plot, config, results, others)}")
    if any(r.errors for r in results):
        sys.exit(1)


def _saved_runs(paths: list[Path]) -> list[tuple[str, list]]:
    """Before the load test, not after it: matplotlib is there and the --compare-json files are bench results."""
    from slmserve.tools.plots import BenchFileError, ToolsMissing, load_bench_results, require

    try:
        require()
        return load_bench_results(paths)
    except (ToolsMissing, BenchFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
