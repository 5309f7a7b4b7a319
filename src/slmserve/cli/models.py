"""`slmserve models`, `requantize` and `finetune`: which models there are, other weight types, LoRA adapters."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from slmserve.settings import FinetuneConfig, Settings

TUNE = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}  # the defaults, declared once there


def finetune(
    data: Annotated[Path, typer.Option(help="JSONL: {instruction, response[, input]} or {messages: [...]} rows.")],
    output: Annotated[Path, typer.Option(help="Directory for the adapter, checkpoints and loss_curve.png.")],
    model: Annotated[str, typer.Option(help="Base model: a known id, GGUF, HF directory or hub id.")] = TUNE["model"],
    epochs: Annotated[float, typer.Option(help="Passes over the training examples.")] = TUNE["epochs"],
    lr: Annotated[float, typer.Option(help="Learning rate (1e-3 suits LoRA on small models and datasets).")] = TUNE[
        "lr"
    ],
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = TUNE["rank"],
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = TUNE["alpha"],
    target_modules: Annotated[str, typer.Option(help="all-linear, or comma-separated module names.")] = TUNE[
        "target_modules"
    ],
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = TUNE["batch_size"],
    max_length: Annotated[int, typer.Option(help="Tokens per example; longer ones are cut.")] = TUNE["max_length"],
    val_fraction: Annotated[float, typer.Option(help="Share of examples held out for validation.")] = TUNE[
        "val_fraction"
    ],
    seed: Annotated[int, typer.Option(help="Shuffle and initialisation seed.")] = TUNE["seed"],
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = TUNE["device"],
    resume: Annotated[bool, typer.Option(help="Go on from the last checkpoint in --output, if any.")] = TUNE["resume"],
) -> None:
    """Fine-tune a LoRA adapter on a JSONL dataset (needs the torch extra); serve it with --lora NAME=OUTPUT."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
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
