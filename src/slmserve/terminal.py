"""`slmserve generate` and `slmserve chat`: the engine in-process, answers streamed to the terminal.

One event loop serves the whole session (asyncio.Runner), so Ctrl-C while an answer streams cancels just that
answer: the request is aborted on the engine and `chat` returns to its prompt. Lines starting with / are
commands, handled here and never sent to the model; the content filter applies as on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from rich.console import Console

from slmserve.engine.async_engine import AsyncEngine
from slmserve.engine.engine import RequestOutput
from slmserve.engine.loader import LoadedModel, load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.models.chat_template import chat_prompt_ids
from slmserve.server.content_filter import REFUSAL, ContentFilter
from slmserve.settings import Settings

_err = Console(stderr=True, highlight=False)  # no colours guessed into numbers and brackets

HELP = """Commands:
  /help          this list
  /reset         forget the conversation (the system prompt stays)
  /system TEXT   set the system prompt (/system alone: the model's default) and start over
  /exit          leave (or Ctrl-D); Ctrl-C stops an answer"""
HINT = "(/help lists the commands; Ctrl-C stops an answer, Ctrl-D leaves)"


def prompt_lines() -> Iterator[str]:
    """Lines typed at a prompt, until EOF, Ctrl-C at the prompt, or /exit; a one-line hint before the first."""
    _err.print(HINT, style="dim", markup=False, soft_wrap=True)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


class Conversation:
    """The messages so far, and the commands that change them."""

    def __init__(self, system: str | None) -> None:
        self.system = system
        self.turns: list[dict] = []

    @property
    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def command(self, line: str) -> str:
        """Carry out a /command; the text to show."""
        name, _, rest = line.partition(" ")
        if name == "/help":
            return HELP
        if name == "/reset":
            self.turns.clear()
            return "(conversation cleared)"
        if name == "/system":
            self.system, self.turns = rest.strip() or None, []
            return f"(system prompt set: {self.system})" if self.system else "(system prompt: the model's default)"
        return f"unknown command {name}; /help lists them"


async def _answer(
    model: LoadedModel, engine: AsyncEngine, messages: list[dict], params: SamplingParams, adapter: str | None
) -> str:
    ids = chat_prompt_ids(model.chat_template, model.tokenizer, messages)
    room = model.max_model_len - len(ids)
    if room < 1:
        raise ValueError(f"the conversation ({len(ids)} tokens) no longer fits the context ({model.max_model_len})")
    params = dataclasses.replace(params, max_tokens=min(params.max_tokens, room))
    text, stats = await stream_answer(engine.generate(ids, params, adapter=adapter), _show)
    sys.stdout.write("\n")
    _err.print(stats, style="dim", markup=False)
    return text


async def stream_answer(
    outputs: AsyncIterator[RequestOutput],
    show: Callable[[str], object],
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[str, str]:
    """Show an answer's text as it comes; the answer and its line of figures: tokens, seconds to the first token,
    tokens/s after it. The engine's first output is empty, sent when it takes the request: not a token."""
    text, start, first, n = "", clock(), None, 0
    async for out in outputs:
        if out.token_ids and first is None:
            first = clock()
        n = out.num_output_tokens
        text += out.text
        show(out.text)
    end = clock()
    rate = (n - 1) / (end - first) if first is not None and n > 1 and end > first else 0.0
    return text, f"{n} tokens, first after {(end if first is None else first) - start:.2f} s, {rate:.1f} tok/s"


def _show(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def run_chat_turns(
    settings: Settings,
    system: str | None,
    turns: Iterable[str],
    max_tokens: int,
    temperature: float,
    adapter: str | None = None,
    commands: bool = True,
) -> int:
    """Load the model, then answer each user turn in order, keeping the history. The exit code: 0; for a one-shot
    run (commands=False) 130 when Ctrl-C stopped its answer and 1 when the filter refused it; 2 when the model
    cannot be used."""
    try:
        model = load_model(settings)
    except (FileNotFoundError, ValueError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        return 2
    if adapter is not None and adapter not in model.adapters:
        known = ", ".join(model.adapters) or "none (load some with --lora NAME=PATH)"
        _err.print(f"[red]error:[/red] no LoRA adapter {adapter!r}; loaded: {known}")
        model.close()
        return 2
    conversation, blocked = Conversation(system), ContentFilter(settings.blocked_words)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    engine = AsyncEngine(model.engine)
    code = 0
    try:
        with asyncio.Runner() as runner, _stopping(engine):  # the engine stops before the loop it posts to closes
            for turn in turns:
                try:
                    answer = _turn(runner, model, engine, conversation, blocked, turn, params, adapter, commands)
                except KeyboardInterrupt:  # the Runner cancelled the answer (or Ctrl-C came just before it): aborted
                    sys.stdout.write("\n")
                    _err.print("[dim](stopped)[/dim]")
                    code = 130
                    continue
                except ValueError as exc:
                    _err.print(str(exc), style="red", markup=False)
                    return 1
                if answer is None:  # a command, or a prompt the filter refused
                    code = 0 if turn.startswith("/") else 1
                    continue
                code = 0
                conversation.turns += [_user(turn), {"role": "assistant", "content": answer}]
    finally:
        model.close()
    return 0 if commands else code


def _turn(
    runner: asyncio.Runner,
    model: LoadedModel,
    engine: AsyncEngine,
    conversation: Conversation,
    blocked: ContentFilter,
    turn: str,
    params: SamplingParams,
    adapter: str | None,
    commands: bool,
) -> str | None:
    """One typed line: a command carried out, a refusal, or the model's answer (streamed as it comes)."""
    if commands and turn.startswith("/"):
        _err.print(conversation.command(turn), markup=False)
        return None
    if blocked.blocks(turn):
        _err.print(f"[red]{REFUSAL}[/red] (--blocked-words sets the words; '' turns the filter off)")
        return None
    messages = [*conversation.messages, _user(turn)]
    return runner.run(_answer(model, engine, messages, params, adapter))


@contextlib.contextmanager
def _stopping(engine: AsyncEngine) -> Iterator[None]:
    try:
        yield
    finally:
        engine.shutdown()


def _user(text: str) -> dict:
    return {"role": "user", "content": text}
