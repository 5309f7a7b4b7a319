"""`slmserve generate` and `slmserve chat`: the engine in the terminal, no HTTP server."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from slmserve.cli.options import settings_options
from slmserve.settings import Settings

# Settings of the HTTP server only: `generate` and `chat` run the engine in the terminal and do not show them.
SERVER_ONLY = frozenset(
    {
        "host", "port", "max_waiting", "retry_after", "max_length_limit", "default_max_length",
        "default_temperature", "log_format", "api_keys", "api_keys_file", "metrics_public", "rate_limit_rpm",
        "rate_limit_tpm", "request_timeout", "drain_timeout", "max_body_bytes", "max_embed_tokens",
    }
)  # fmt: skip
terminal_options = functools.partial(settings_options, skip=SERVER_ONLY)
USE_ADAPTER = "Answer with this LoRA adapter, one of those --lora loads."


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
