"""The server's state: the models it serves, each with its engine; and the FastAPI dependencies that hand it out.

Several models are a registry keyed by served name (`--model a --model b`); requests pick one by `model`, and
the seeds' routes use the first.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from slmserve.engine.async_engine import AsyncEngine
from slmserve.engine.engine import AdapterInUseError
from slmserve.engine.loader import LoadedModel, load_model
from slmserve.server import errors
from slmserve.server.content_filter import ContentFilter
from slmserve.server.engine_client import EngineClient
from slmserve.server.metrics import Metrics
from slmserve.server.serving import Serving
from slmserve.server.shutdown import Drain
from slmserve.server.store import open_store
from slmserve.settings import Settings

log = logging.getLogger(__name__)

# How a model gets served: its settings -> the model as the server holds it, and the engine client to run it with.
# Raises FileNotFoundError or ValueError saying why it cannot.
Connect = Callable[[Settings], Awaitable[tuple[LoadedModel, EngineClient]]]


async def run_here(settings: Settings) -> tuple[LoadedModel, EngineClient]:
    """The single process: load the weights here and run the engine on a thread of this process."""
    model = await asyncio.to_thread(load_model, settings)
    return model, AsyncEngine(model.engine)


@dataclass
class ModelState:
    """One served model: its settings, its loaded weights and engine (or why there are none), its adapters."""

    settings: Settings  # this model's own: `model` holds its one source, served_model_name its name
    metrics: Metrics = field(default_factory=Metrics)
    content_filter: ContentFilter | None = None
    connect: Connect = run_here
    model: LoadedModel | None = None
    engine: EngineClient | None = None
    serving: Serving | None = None
    load_error: str | None = None
    loading: bool = False
    unloading: bool = False  # an unload is draining requests: on-demand loads wait for no one, they are refused
    _lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.content_filter = self.content_filter or ContentFilter(self.settings.blocked_words)

    @property
    def name(self) -> str:
        return self.settings.model_name

    def attach(self, model: LoadedModel, engine: EngineClient | None = None) -> None:
        """Serve a loaded model with its engine client (None: start an engine thread on its engine here)."""
        self.engine = engine or AsyncEngine(model.engine)
        self.serving = Serving(model, self.engine, self.metrics, self.settings, self.content_filter)
        self.model, self.load_error = model, None

    @property
    def status(self) -> str:
        """healthy, loading, error (the last load failed) or unloaded."""
        if self.serving is not None:
            return "healthy"
        return "loading" if self.loading else ("error" if self.load_error else "unloaded")

    def not_ready(self) -> errors.APIError:
        return errors.not_ready(self.status, self.load_error)

    @property
    def num_running(self) -> int:
        return self.engine.num_running if self.engine else 0

    @property
    def num_waiting(self) -> int:
        return self.engine.num_waiting if self.engine else 0

    def detach(self) -> None:
        """Stop the engine and let the model go. Its weights are freed once no request holds them any more (a
        request may still be tokenizing with them; see models/llamacpp_vocab.ModelWeights), at once when none does."""
        if self.engine is not None:
            self.engine.shutdown()
        if self.model is not None:
            self.model.close()
        self.model = self.engine = self.serving = None
        gc.collect()  # what only a cycle still holds goes now, not at some later collection

    async def load(self) -> bool:
        """Load settings.model unless loaded; True if this call loaded it. Raises APIError(503) on failure."""
        async with self._lifecycle:
            if self.serving is not None:
                return False
            self.loading = True
            try:
                loaded, engine = await self.connect(self.settings)
            except (FileNotFoundError, ValueError) as exc:
                self.load_error = str(exc)
                raise errors.not_ready("error", self.load_error) from exc
            finally:
                self.loading = False
            self.attach(loaded, engine)
            return True

    async def unload(self, drain_seconds: float = 60.0) -> bool:
        """Stop taking requests, let those in flight finish (up to drain_seconds), then free the model.

        False if no model was loaded. Requests still running after drain_seconds end with a 503-style error.
        """
        async with self._lifecycle:
            if self.serving is None:
                return False
            self.serving = None  # new requests now get 503
            self.unloading = True
            try:
                deadline = asyncio.get_running_loop().time() + drain_seconds
                while self.num_running + self.num_waiting and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(self.detach)
            finally:
                self.unloading = False
            return True

    async def load_adapter(self, path: str, name: str | None = None) -> tuple[str, bool]:
        """Load a LoRA adapter (loading the base model first if needed): (its name, True if loaded now).

        The load runs on the engine thread between two steps, so requests in flight are not disturbed.
        """
        await self.load()
        model = self.model
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file() and not (model.backend == "llama.cpp" and folder.is_file()):
            raise errors.APIError(
                404, f"LoRA model not found: no adapter_config.json in {path}", param="lora_path", code="lora_not_found"
            )
        name = name or folder.name.removesuffix(".gguf")
        if model.adapters.get(name) == str(folder):
            return name, False
        if name == model.name or name in model.adapters:
            raise errors.APIError(409, f"the name {name!r} is already taken; unload it or give another lora_name")
        try:
            await self.engine.load_adapter(name, str(folder))
        except ValueError as exc:
            raise errors.APIError(400, str(exc), param="lora_path") from exc
        return name, True

    async def unload_adapter(self, name: str) -> None:
        """Unload an adapter no request is using; 404 if unknown, 409 while requests use it."""
        model = self.model
        if model is None or name not in model.adapters:
            raise errors.APIError(404, f"no LoRA adapter named {name!r} is loaded", code="lora_not_found")
        try:
            await self.engine.unload_adapter(name)
        except AdapterInUseError as exc:
            raise errors.APIError(409, str(exc)) from exc


class AppState:
    """Every served model by name (the first is the default), sharing one metrics registry and content filter;
    lives on app.state.slm. `connect` says where engines run (this process, or a cluster's model hosts).
    ValueError for a model list that names two models alike."""

    def __init__(self, settings: Settings, connect: Connect = run_here) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.drain = Drain()
        self.content_filter = ContentFilter(settings.blocked_words)
        self.responses = open_store(settings)  # StoreError (a ValueError) now, not at the first request
        self.models = {
            s.model_name: ModelState(s, self.metrics, self.content_filter, connect) for s in settings.per_model()
        }
        self.default = next(iter(self.models.values()))
        states = list(self.models.values())
        self.metrics.bind_gauges(lambda: sum(m.num_running for m in states), lambda: sum(m.num_waiting for m in states))

    def serving_for(self, name: str | None) -> Serving:
        """The serving of the model a request names (None: the default), or of the model holding the LoRA
        adapter it names; 404 listing every name for an unknown one, 503 when that model is not ready."""
        state = self.models.get(name) if name is not None else self.default
        if state is None:
            state = next((m for m in self.models.values() if m.model and name in m.model.adapters), None)
        if state is None:
            raise errors.model_not_found(name, self.names())
        if state.serving is None:
            raise state.not_ready()
        return state.serving

    def names(self) -> list[str]:
        """Every name a request may give: the models, then their adapters."""
        adapters = [a for m in self.models.values() if m.model for a in m.model.adapters]
        return [*self.models, *adapters]

    async def load_all(self) -> None:
        """Load the models one after another, the default first; a model that fails does not stop the others."""
        for state in self.models.values():
            try:
                await state.load()
            except errors.APIError as exc:
                log.error("%s: %s", state.name, exc.message)

    def detach(self) -> None:
        for state in self.models.values():
            state.detach()


def get_app_state(request: Request) -> AppState:
    return request.app.state.slm


def get_state(request: Request) -> ModelState:
    """The default model's state: what the seeds' routes (one model each) work with."""
    return request.app.state.slm.default


def get_serving(request: Request) -> Serving:
    """The default model's serving object, or a 503 saying why there is none (loading, failed, unloaded)."""
    state = get_state(request)
    if state.serving is None:
        raise state.not_ready()
    return state.serving
