"""The asyncio face of the engine: one engine thread, one asyncio queue per request.

The HTTP side calls `generate()` and iterates RequestOutputs. Commands (add, abort) cross into the engine
thread through a thread-safe queue and are applied between steps; outputs come back through each request's
asyncio queue via call_soon_threadsafe. A request whose consumer goes away (client disconnect, task cancelled)
is aborted, so its slot is free by the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from slmserve.engine.embedding import Embedder
from slmserve.engine.engine import Engine, RequestOutput, UnknownAdapterError
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import QueueFullError
from slmserve.engine.structured import Constraint

log = logging.getLogger(__name__)


def accepted(request_id: str, num_prompt_tokens: int) -> RequestOutput:
    """The empty output an engine client yields first, once the engine has taken a request: a streamed response
    waits for it before its headers go out, so a refusal is still an HTTP status (see server/streams.primed)."""
    return RequestOutput(request_id, "", [], num_prompt_tokens, 0)


class EngineDeadError(RuntimeError):
    """The engine thread is stopped; requests cannot be served."""


class EngineStepError(RuntimeError):
    """A step failed; the requests it carried were ended. The engine goes on serving."""


@dataclass
class _Sink:
    """Where one request's outputs go: its asyncio queue, filled on the event loop's thread."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue

    def __call__(self, item: RequestOutput | BaseException) -> None:
        _post(self.loop, self.queue.put_nowait, item)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """callback(*args) on loop's thread; nothing when that loop has closed (its consumers went with it), so one
    closed loop never takes the engine thread down."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _deliver(items: list[tuple[asyncio.Queue, RequestOutput]]) -> None:
    for q, item in items:
        q.put_nowait(item)


@dataclass
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    adapter: str | None
    constraint: Constraint | None
    sink: _Sink


@dataclass
class _Call:
    """Run fn on the engine thread between steps (e.g. load a LoRA adapter into the runner)."""

    fn: Callable[[], object]
    done: Callable[[object, BaseException | None], None]


@dataclass
class _Abort:
    request_id: str


class AsyncEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._commands: queue.SimpleQueue[_Add | _Abort | _Call | None] = queue.SimpleQueue()
        self._sinks: dict[str, _Sink] = {}
        # Requests sent to the engine thread that it has not added yet: waiting, for admission. The event loop
        # adds an id and takes it out again when its client leaves first (a storm of streams closed at once must
        # not count as a full queue); the engine thread takes it out when it adds the request. Set operations are
        # atomic under the GIL.
        self._pending: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="slmserve-engine", daemon=True)
        self._error: EngineDeadError | None = None
        self._embedder = Embedder(engine.runner, self.call)
        self._thread.start()

    @property
    def num_running(self) -> int:
        return len(self.engine.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.engine.scheduler.waiting) + len(self._pending)

    @property
    def max_waiting(self) -> int:
        return self.engine.scheduler.max_waiting

    @property
    def room(self) -> int:
        """Sequences the engine can take now (the scheduler's room, less those on their way to it)."""
        return self.engine.scheduler.room - len(self._pending)

    @property
    def alive(self) -> bool:
        """Whether the engine thread still serves."""
        return self._error is None and self._thread.is_alive()

    def shutdown(self) -> None:
        """Stop the engine thread; requests still in flight get EngineDeadError."""
        self._commands.put(None)
        self._thread.join(timeout=30)

    async def call(self, fn: Callable[[], object]) -> object:
        """fn() on the engine thread, between two steps, so it may change the runner; its result or exception."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def done(result: object, exc: BaseException | None) -> None:
            def settle() -> None:
                if not future.done():
                    future.set_exception(exc) if exc is not None else future.set_result(result)

            _post(loop, settle)

        self._commands.put(_Call(fn, done))
        return await future

    @property
    def embed_len(self) -> int:
        return self.engine.runner.embed_len

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        """Mean-pooled, L2-normalized final hidden states [N, hidden] of the inputs, computed between steps."""
        return await self._embedder.embed(token_lists)

    async def check_grammar(self, grammar: str) -> int | None:
        """Compile a grammar against this engine's vocabulary, off the event loop: the tokens of its shortest answer
        (None: none within reach), or GrammarError naming the problem."""
        constraint = await asyncio.to_thread(self.engine.grammars.matcher, grammar)
        return None if constraint.closing is None else len(constraint.closing)

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter into the runner between two steps, so requests in flight are not disturbed; a
        conversion it needs first (llama.cpp: peft -> GGUF, seconds) runs off the engine thread."""
        await asyncio.to_thread(self.engine.runner.prepare_adapter, path)
        await self.call(lambda: self.engine.runner.load_adapter(name, path))

    async def unload_adapter(self, name: str) -> None:
        """Unload an adapter no request uses; AdapterInUseError while some do. On the engine thread, so no request
        can start using it meanwhile."""
        await self.call(lambda: self.engine.unload_adapter(name))

    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs until it finishes, the first an empty one once the engine has taken it.
        Raises QueueFullError at once when over capacity."""
        if self._error is not None:
            raise self._error
        if self.room <= 0:
            raise QueueFullError(f"{self.num_waiting} requests are already waiting")
        request_id = request_id or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._pending.add(request_id)  # counted as waiting from here, so admission sees it while its grammar compiles
        try:
            # The grammar compiles here, off the engine thread, so a large one never stalls a step.
            compile_grammar = self.engine.grammars.matcher
            constraint = await asyncio.to_thread(compile_grammar, params.grammar) if params.grammar else None
        except BaseException:
            self._pending.discard(request_id)
            raise
        self._commands.put(_Add(request_id, prompt_token_ids, params, adapter, constraint, _Sink(loop, outputs)))
        finished = False
        try:
            yield accepted(request_id, len(prompt_token_ids))
            while not finished:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self._pending.discard(request_id)
                self._commands.put(_Abort(request_id))

    def _loop(self) -> None:
        try:
            self._serve()
            self._error = EngineDeadError("the engine was stopped (model unloaded)")
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear of it
            log.exception("engine thread failed")
            self._error = EngineDeadError(f"engine failed: {exc}")
        for sink in list(self._sinks.values()):
            sink(self._error)
        self._sinks.clear()
        while (cmd := self._next_command()) is not ...:
            if isinstance(cmd, _Add):  # arrived after the end: refuse, never leave it waiting
                cmd.sink(self._error)
            elif isinstance(cmd, _Call):
                cmd.done(None, self._error)

    def _serve(self) -> None:
        while True:
            # Block for commands only when idle; between steps just drain what has arrived.
            cmd = self._commands.get() if not self.engine.has_work else self._next_command()
            while cmd is not ...:
                if cmd is None:
                    return
                self._apply(cmd)
                cmd = self._next_command()
            if self.engine.has_work:
                try:
                    outputs = self.engine.step()
                except Exception as exc:  # noqa: BLE001 - one bad step must not take the server down
                    log.exception("engine step failed; aborting the requests it carried")
                    self._fail_running(exc)
                    continue
                self._dispatch(outputs)

    def _fail_running(self, exc: Exception) -> None:
        """End the running requests with an error (their KV state is unknown); waiting ones go on."""
        error = EngineStepError(f"generation failed: {exc}")
        for seq in list(self.engine.scheduler.running):
            self.engine.abort(seq.request_id)
            sink = self._sinks.pop(seq.request_id, None)
            if sink is not None:
                sink(error)

    def _next_command(self):
        try:
            return self._commands.get_nowait()
        except queue.Empty:
            return ...

    def _apply(self, cmd: _Add | _Abort | _Call) -> None:
        if isinstance(cmd, _Call):
            try:
                result = cmd.fn()
            except Exception as exc:  # noqa: BLE001 - handed back to the caller
                cmd.done(None, exc)
            else:
                cmd.done(result, None)
            return
        if isinstance(cmd, _Abort):
            self._sinks.pop(cmd.request_id, None)
            self.engine.abort(cmd.request_id)
            return
        self._pending.discard(cmd.request_id)
        try:
            self.engine.add_request(cmd.request_id, cmd.prompt_token_ids, cmd.params, cmd.adapter, cmd.constraint)
        except (QueueFullError, ValueError, UnknownAdapterError) as exc:
            cmd.sink(exc)
            return
        self._sinks[cmd.request_id] = cmd.sink

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        """Hand a step's outputs to the event loop in one callback: one wake-up a step, not one a request."""
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, RequestOutput]]] = {}
        for out in outputs:
            sink = self._sinks.pop(out.request_id) if out.finished else self._sinks.get(out.request_id)
            if sink is not None:
                batches.setdefault(sink.loop, []).append((sink.queue, out))
        for loop, items in batches.items():
            _post(loop, _deliver, items)
