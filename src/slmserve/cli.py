"""The `slmserve` command: serve, cluster, generate, chat, bench, finetune, models, requantize; the tools' explore,
monitor, compare and plot-bench are declared in tools/cli.py.

Flags of serve/generate/chat are generated from Settings' fields, so they match env vars and .env exactly.
A flag that is not given leaves the env/.env/default value in place.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import typer
from pydantic_settings import SettingsError

from slmserve.settings import Settings
from slmserve.tools import cli as tools_cli

# Flags that may be given more than once (`--model a --model b`), Ollama-style.
REPEATABLE = {"model"}

app = typer.Typer(help="slmserve: a fast, concurrent server for small language models.", no_args_is_help=True)


# --help shows the settings in these panels, in this order: each panel sizes its own columns, so one long flag
# does not narrow every help text. A setting no panel names (a new one) goes in the last.
PANELS = {
    "Model": "model served_model_name engine weights device dtype lora cache_dir",
    "Engine": "max_running ctx_size max_model_len step_token_budget n_threads kv_unified kv_cache_type",
    "HTTP server": "host port max_waiting retry_after request_timeout drain_timeout max_body_bytes max_embed_tokens",
    "API keys and rate limits": "api_keys api_keys_file metrics_public rate_limit_rpm rate_limit_tpm",
    "Request defaults": "max_length_limit default_max_length default_temperature blocked_words",
    "DRY sampler defaults": "dry_multiplier dry_base dry_allowed_length dry_penalty_last_n dry_sequence_breakers",
    "Logging": "log_level log_format",
    "Other settings": "",
}


def _panel(name: str) -> str:
    """The --help panel of a setting."""
    return next((panel for panel, names in PANELS.items() if name in names.split()), list(PANELS)[-1])


def _settings_options(func: Callable[..., Any], skip: frozenset[str] = frozenset()) -> Callable[..., Any]:
    """Give `func` one --option per Settings field but those in skip; it receives the built Settings as
    `settings` (skipped fields keep their env/.env/default value)."""
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "settings"]
    names = {p.name for p in own}
    extra = []
    for name in sorted(Settings.model_fields, key=lambda n: list(PANELS).index(_panel(n))):  # panel by panel
        info = Settings.model_fields[name]
        if name in names or name in skip:
            continue
        kind = list[str] if name in REPEATABLE else _plain_type(info.annotation)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        # Rich reads [word] as markup and drops it ("needs slmserve[torch]" showed as "needs slmserve"): escape it.
        help_text = f"{info.description} (env SLMSERVE_{name.upper()}; default: {_shown(name)})".replace("[", "\\[")
        # No type column (metavar ""): at 80 columns its width is the help text's, and the default shows the type.
        option = typer.Option(
            None, *decls, help=help_text, show_default=False, metavar="", rich_help_panel=_panel(name)
        )
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None))

    def wrapper(**kwargs: Any) -> Any:
        given = {k: _parse(k, kwargs.pop(k)) for k in list(kwargs) if k not in names and kwargs[k] is not None}
        for k in [k for k in kwargs if k not in names]:
            kwargs.pop(k)
        return func(settings=_settings(given), **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *extra])
    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    return wrapper


# SLMSERVE_* variables that are not settings: examples/request.sh's server, the docs' screenshot switch.
NOT_SETTINGS = {"SLMSERVE_URL", "SLMSERVE_DOCS_SCREENSHOTS"}


def _warn_unknown_env() -> None:
    """A warning for each SLMSERVE_* variable (environment or .env) that is no setting, naming the closest one:
    pydantic-settings ignores them, so a typo (SLMSERVE_PROT) would silently leave the default in place."""
    from dotenv import dotenv_values

    known = {f"SLMSERVE_{name.upper()}" for name in Settings.model_fields}
    given = {k.upper() for k in os.environ if k.upper().startswith("SLMSERVE_")}
    if os.path.isfile(".env"):
        given |= {k.upper() for k in dotenv_values(".env") if k and k.upper().startswith("SLMSERVE_")}
    for name in sorted(given - known - NOT_SETTINGS):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (`slmserve serve --help` lists the settings)"
        typer.echo(f"Warning: {name} is not a setting of slmserve and is ignored{hint}", err=True)


def _shown(name: str) -> str:
    """A setting's default as --help shows it."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(default) or "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return "none" if default is None else str(default)


def _settings(given: dict[str, Any]) -> Settings:
    """Settings from flags, env and .env; a bad value is one line per problem naming where to fix it, exit 2."""
    _warn_unknown_env()
    try:
        return Settings(**given)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            where = f"--{name.replace('_', '-')}" if name in given else f"SLMSERVE_{name.upper()} (env or .env)"
            typer.echo(f"Error: {where} = {err.get('input')!r}: {err['msg']}", err=True)
    except SettingsError as exc:
        typer.echo(f"Error: {exc} ({exc.__cause__})" if exc.__cause__ else f"Error: {exc}", err=True)
    raise typer.Exit(2)


def _parse(name: str, value: Any) -> Any:
    """A repeatable flag's values join into the field's comma-separated form. List settings pass on as text:
    Settings reads a JSON list or comma-separated words, from flags as from env/.env."""
    return ",".join(value) if name in REPEATABLE else value


def _plain_type(annotation: Any) -> type:
    """int for `int | None`, str for Literal[...] and anything else typer cannot take as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, str, bool) else str


def _logging(settings: Settings) -> None:
    if settings.log_format == "json":
        from slmserve.server.request_context import JSONFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
@_settings_options
def serve(settings: Settings) -> None:
    """Start the HTTP server (OpenAI API, /health, /metrics) on the configured model.

    SIGTERM or Ctrl-C drains it (up to --drain-timeout) and exits 0; a second signal exits at once (exit 1)."""
    import uvicorn

    from slmserve.server.app import create_app
    from slmserve.server.drain import DrainingServer

    _logging(settings)
    app = _checked(create_app, settings)
    _checked(_check_sources, settings)
    json_logs = settings.log_format == "json"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # json: uvicorn's loggers go through the root's JSON handler, and the app logs each request itself.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=not json_logs,
        # After the drain, uvicorn waits for connections to flush what they were sent (a slow reader's last
        # chunks) for up to this long; what is left is cut.
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, app.state.slm.drain, settings.drain_timeout)
    server.run()
    if server.forced:
        logging.shutdown()
        os._exit(1)  # the engine thread may be mid-step: do not wait for it


def _check_sources(settings: Settings) -> None:
    """ValueError naming a model that is not there, before the server starts: a server that can never load the
    model it was started with exits at once (restart policies of systemd, Docker and Ray depend on that)."""
    from slmserve.models.registry import resolve_model

    for each in settings.per_model():
        try:
            resolve_model(each.model, each.cache_dir)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from exc


def _checked(make: Callable[..., Any], *args: Any) -> Any:
    """make(*args); a ValueError (two models of one name, a bad option) is a usage error: exit 2 with its text."""
    try:
        return make(*args)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc


# The autoscaling flags get a --help panel of their own: beside --direct-ingress/--ray-proxy, 80 columns cut them.
_autoscaling = functools.partial(typer.Option, rich_help_panel="Autoscaling")


@app.command()
@_settings_options
def cluster(
    settings: Settings,
    replicas: Annotated[int, typer.Option(help="Model-host replicas per model (fixed).")] = 1,
    min_replicas: Annotated[int, _autoscaling(help="Fewest replicas (with --max-replicas).")] = 1,
    max_replicas: Annotated[int | None, _autoscaling(help="Most replicas; turns autoscaling on.")] = None,
    target_ongoing_requests: Annotated[float, _autoscaling(help="Requests per replica to aim at.")] = 16,
    upscale_delay: Annotated[float, _autoscaling(help="Seconds over target before adding a replica.")] = 10,
    downscale_delay: Annotated[float, _autoscaling(help="Seconds under target before removing one.")] = 120,
    threads: Annotated[int, typer.Option(help="llama.cpp threads per replica.")] = 1,
    drain_seconds: Annotated[float, typer.Option(help="On stop, replicas finish requests for this long.")] = 30,
    stream_interval_ms: Annotated[
        float,
        typer.Option(help="Most ms a model host holds tokens before it sends them (0: at every step; longer: faster)."),
    ] = 100,
    gateways: Annotated[
        int, typer.Option(help="Gateway replicas (with --ray-proxy); share state with --store-url.")
    ] = 1,
    direct_ingress: Annotated[
        bool,
        typer.Option(
            "--direct-ingress/--ray-proxy",
            help="Ray Serve's throughput-optimized mode: the gateway serves --port itself, hosts over gRPC. Or every"
            " request through Ray's proxy actor: slower, the mode of Ray's own config files.",
        ),
    ] = True,
) -> None:
    """Serve on a local Ray Serve cluster: a gateway, N model-host replicas per model (extra slmserve\\[cluster])."""
    try:
        from slmserve.cluster.app import ClusterOptions
        from slmserve.cluster.run import run_cluster
        from slmserve.cluster.startup import ClusterFailed
    except ImportError as exc:
        typer.echo(f"Error: the cluster needs Ray Serve: pip install 'slmserve[cluster]' ({exc})", err=True)
        raise typer.Exit(1) from exc
    _logging(settings)
    options = _checked(
        functools.partial(
            ClusterOptions,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
            upscale_delay_s=upscale_delay,
            downscale_delay_s=downscale_delay,
            threads=threads,
            drain_seconds=drain_seconds,
            stream_interval_ms=stream_interval_ms,
            gateways=gateways,
        )
    )
    _checked(settings.per_model)
    try:
        _checked(functools.partial(run_cluster, settings, options, direct_ingress=direct_ingress))
    except ClusterFailed as exc:  # the port taken, a deployment failed: its cause in a line or two, no traceback
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc


# Settings of the HTTP server only: `generate` and `chat` run the engine in the terminal and do not show them.
SERVER_ONLY = frozenset(
    {
        "host", "port", "max_waiting", "retry_after", "max_length_limit", "default_max_length",
        "default_temperature", "log_format", "api_keys", "api_keys_file", "metrics_public", "rate_limit_rpm",
        "rate_limit_tpm", "request_timeout", "drain_timeout", "max_body_bytes", "max_embed_tokens",
    }
)  # fmt: skip
terminal_options = functools.partial(_settings_options, skip=SERVER_ONLY)
USE_ADAPTER = "Answer with this LoRA adapter, one of those --lora loads."


@app.command()
@terminal_options
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.7,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    use_adapter: Annotated[str | None, typer.Option(help=USE_ADAPTER)] = None,
    settings: Settings = None,
) -> None:
    """Answer one prompt, streaming the text to the terminal (Ctrl-C stops it: exit 130)."""
    from slmserve.terminal import run_chat_turns

    code = run_chat_turns(settings, system, [prompt], max_tokens, temperature, use_adapter, commands=False)
    raise typer.Exit(code)


@app.command()
@terminal_options
def chat(
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 512,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.7,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    use_adapter: Annotated[str | None, typer.Option(help=USE_ADAPTER)] = None,
    settings: Settings = None,
) -> None:
    """An interactive multi-turn chat in the terminal; /help lists its commands.

    Ctrl-C stops an answer; Ctrl-D or /exit leaves."""
    from slmserve.terminal import prompt_lines, run_chat_turns

    raise typer.Exit(run_chat_turns(settings, system, prompt_lines(), max_tokens, temperature, use_adapter))


@app.command()
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


@app.command()
def finetune(
    data: Annotated[Path, typer.Option(help="JSONL: {instruction, response[, input]} or {messages: [...]} rows.")],
    output: Annotated[Path, typer.Option(help="Directory for the adapter, checkpoints and loss_curve.png.")],
    model: Annotated[str, typer.Option(help="Base model: a known id, GGUF, HF directory or hub id.")] = (
        "smollm2-135m-instruct"
    ),
    epochs: Annotated[float, typer.Option(help="Passes over the training examples.")] = 3.0,
    lr: Annotated[float, typer.Option(help="Learning rate (1e-3 suits LoRA on small models and datasets).")] = 1e-3,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = 16,
    target_modules: Annotated[str, typer.Option(help="all-linear, or comma-separated module names.")] = "all-linear",
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per example; longer ones are cut.")] = 256,
    val_fraction: Annotated[float, typer.Option(help="Share of examples held out for validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Shuffle and initialisation seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Go on from the last checkpoint in --output, if any.")] = True,
) -> None:
    """Fine-tune a LoRA adapter on a JSONL dataset (needs the torch extra); serve it with --lora NAME=OUTPUT."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from slmserve.finetune import FinetuneConfig
        from slmserve.finetune import finetune as run_finetune
    except ImportError as exc:
        typer.echo(f"fine-tuning needs the torch extra: pip install 'slmserve[torch]' ({exc})", err=True)
        raise typer.Exit(2) from exc
    config = FinetuneConfig(
        data=data, output=output, model=model, epochs=epochs, lr=lr, rank=rank, alpha=alpha,
        target_modules=target_modules, batch_size=batch_size, max_length=max_length, val_fraction=val_fraction,
        seed=seed, device=device, resume=resume,
    )  # fmt: skip
    try:
        metrics = run_finetune(config)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"adapter in {output}; serve it with: slmserve serve --lora NAME={output}")


@app.command()
def models(
    cache_dir: Annotated[str | None, typer.Option(help="Where requantized copies are kept (as serve's).")] = None,
) -> None:
    """List the model ids slmserve knows, where their files are, and the weight layout --weights auto runs."""
    from slmserve.models import weights
    from slmserve.models.registry import KNOWN_MODELS

    for m in KNOWN_MODELS.values():
        try:
            path = m.path()
        except FileNotFoundError as exc:
            typer.echo(f"{m.id}\n  {m.description}\n  not installed ({exc})")
            continue
        layout = weights.describe(path, Path(cache_dir or Settings().cache_dir))
        typer.echo(f"{m.id}\n  {m.description}\n  {path}\n  weights: {layout}")


@app.command()
def requantize(
    out: Annotated[Path, typer.Argument(help="The GGUF file to write.")],
    to: Annotated[Literal["q4_0", "q8_0", "iq4_nl", "f16"], typer.Option(help="The weights' type.")] = "q8_0",
    model: Annotated[str, typer.Option(help="A known model id or a GGUF file.")] = "smollm2-135m-instruct",
    lora: Annotated[Path | None, typer.Option(help="A peft LoRA adapter to merge in first (torch extra).")] = None,
) -> None:
    """Write a copy of a GGUF model with its weights in another type (llama.cpp's quantize); with --lora, a
    standalone model with that fine-tuned adapter merged into its weights, for llama-server, Ollama or slmserve.

    A second model to serve or compare; made from the bundled Q4_1 file, it holds no more than Q4_1 did."""
    from slmserve.models import weights
    from slmserve.models.registry import resolve_model_path

    try:
        source = resolve_model_path(model)
    except FileNotFoundError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if out.resolve() == source.resolve():
        typer.echo(f"Error: {out} is the model itself; name another file", err=True)
        raise typer.Exit(2)
    merged = out.with_name(f".{out.name}.merged-f16.gguf")
    try:
        if lora is not None:
            _merge(lora, model, merged)
            source = merged
        weights.requantize(source, out, to)
    except weights.WeightsError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        merged.unlink(missing_ok=True)
    what = f"{model} with {lora} merged" if lora else source.name
    typer.echo(f"wrote {out} ({to}, from {what}); serve it with: slmserve serve --model {out}")


def _merge(adapter: Path, model: str, out: Path) -> None:
    """The base model with the adapter merged, as an F16 GGUF at out; exits with a message when it cannot."""
    try:
        from slmserve.finetune import merged_gguf
    except ImportError as exc:
        typer.echo(f"merging an adapter needs the torch extra: pip install 'slmserve[torch]' ({exc})", err=True)
        raise typer.Exit(2) from exc
    try:
        merged_gguf(adapter, model, out, Settings().cache_dir)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc


tools_cli.register(app, _settings_options)

if __name__ == "__main__":
    app()
