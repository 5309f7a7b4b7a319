"""The server's state, and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from slmserve.engine.async_engine import AsyncEngine
from slmserve.engine.loader import LoadedModel
from slmserve.server import errors
from slmserve.server.metrics import Metrics
from slmserve.server.serving import Serving
from slmserve.settings import Settings


@dataclass
class AppState:
    """Everything a request handler may need; lives on app.state.slm."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    model: LoadedModel | None = None
    engine: AsyncEngine | None = None
    serving: Serving | None = None
    load_error: str | None = None

    def attach(self, model: LoadedModel) -> None:
        """Serve a loaded model: start its engine thread and wire metrics."""
        self.engine = AsyncEngine(model.engine)
        self.metrics.bind_gauges(lambda: self.engine.num_running, lambda: self.engine.num_waiting)
        self.serving = Serving(model, self.engine, self.metrics, self.settings.retry_after)
        self.model = model

    def detach(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        if self.model is not None:
            self.model.close()
        self.model = self.engine = self.serving = None


def get_state(request: Request) -> AppState:
    return request.app.state.slm


def get_serving(request: Request) -> Serving:
    """The serving object, or 503 while the model is still loading."""
    serving = get_state(request).serving
    if serving is None:
        raise errors.not_ready()
    return serving
