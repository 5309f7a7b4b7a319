"""create_app(settings): the FastAPI application, its state and its lifespan. No module globals."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from slmserve import __version__
from slmserve.engine.loader import LoadedModel
from slmserve.server import errors
from slmserve.server.app_state import AppState, Connect, run_here
from slmserve.server.disconnect import CancelOnDisconnect
from slmserve.server.routes import gateway, generate, health, openai, slm, ui
from slmserve.server.served_by import ReplicaHeader
from slmserve.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, model: LoadedModel | None = None, connect: Connect = run_here) -> FastAPI:
    """The app. Given no model, it connects settings' models in the background (loads them here, or reaches a
    cluster's model hosts): /health says 503 until ready. ValueError when the model list names two models alike."""
    state = AppState(settings, connect)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loader = None
        if model is not None:
            state.default.attach(model)
        else:
            for each in state.models.values():
                each.loading = True  # /health says "loading" from the first request on
            loader = asyncio.create_task(state.load_all())
        try:
            yield
        finally:
            if loader is not None:
                loader.cancel()
            state.detach()

    app = FastAPI(title="slmserve", version=__version__, lifespan=lifespan)
    app.state.slm = state
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(ReplicaHeader)  # added last: outermost, so it sees every response's start
    errors.install_handlers(app, settings.retry_after)
    for module in (health, openai, gateway, slm, generate, ui):
        app.include_router(module.router)
    ui.mount_static(app)
    return app
