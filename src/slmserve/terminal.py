"""`slmserve generate` and `slmserve chat`: the engine in-process, answers streamed to the terminal."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Iterator

from rich.console import Console

from slmserve.engine.async_engine import AsyncEngine
from slmserve.engine.loader import LoadedModel, load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings

_err = Console(stderr=True)


def prompt_lines() -> Iterator[str]:
    """User turns typed at a prompt, until EOF or /exit."""
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


async def _answer(model: LoadedModel, engine: AsyncEngine, messages: list[dict], params: SamplingParams) -> str:
    ids = model.tokenizer.encode(model.chat_template.render(messages), add_special=False)
    room = model.max_model_len - len(ids)
    if room < 1:
        raise ValueError(f"the conversation ({len(ids)} tokens) no longer fits the context ({model.max_model_len})")
    params.max_tokens = min(params.max_tokens, room)
    text, start, first, n = "", time.perf_counter(), None, 0
    async for out in engine.generate(ids, params):
        first = first or time.perf_counter()
        n = out.num_output_tokens
        text += out.text
        sys.stdout.write(out.text)
        sys.stdout.flush()
    end = time.perf_counter()
    sys.stdout.write("\n")
    rate = (n - 1) / (end - first) if first and n > 1 and end > first else 0.0
    _err.print(f"[dim]{n} tokens, first after {(first or end) - start:.2f} s, {rate:.1f} tok/s[/dim]")
    return text


def run_chat_turns(
    settings: Settings, messages: list[dict], turns: Iterable[str], max_tokens: int, temperature: float
) -> None:
    """Load the model, then answer each user turn in order, keeping the history."""
    try:
        model = load_model(settings)
    except (FileNotFoundError, ValueError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    engine = AsyncEngine(model.engine)
    try:
        for turn in turns:
            messages.append({"role": "user", "content": turn})
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
            try:
                answer = asyncio.run(_answer(model, engine, messages, params))
            except ValueError as exc:
                _err.print(f"[red]{exc}[/red]")
                return
            messages.append({"role": "assistant", "content": answer})
    finally:
        engine.shutdown()
        model.close()
