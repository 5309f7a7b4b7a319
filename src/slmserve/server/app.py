"""create_app(settings): the FastAPI application, its state and its lifespan. No module globals."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from slmserve import __version__
from slmserve.engine.loader import LoadedModel
from slmserve.server import errors
from slmserve.server.anthropic import routes as anthropic
from slmserve.server.app_state import AppState, Connect, run_here
from slmserve.server.middleware.auth import Auth, load_keys
from slmserve.server.middleware.body_size import BodyLimit
from slmserve.server.middleware.disconnect import CancelOnDisconnect
from slmserve.server.middleware.drain import DrainGate
from slmserve.server.middleware.record import RequestContext
from slmserve.server.middleware.replica import ReplicaHeader
from slmserve.server.responses import routes as responses
from slmserve.server.routes import adapters, health, openai, ui
from slmserve.server.seeds import chat, generate, slm
from slmserve.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, model: LoadedModel | None = None, connect: Connect = run_here) -> FastAPI:
    """The app. Given no model, it connects settings' models in the background (loads them here, or reaches a
    cluster's model hosts): /health says 503 until ready. ValueError when the model list names two models alike,
    an API keys file cannot be read or the response store cannot be used."""
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
            await state.responses.close()

    # /docs and /redoc are routes/ui.py's: FastAPI's own load their scripts from a CDN, blank without internet.
    app = FastAPI(title="slmserve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.slm = state
    # Each add_middleware wraps the ones before it: the last added sees a request first.
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Auth, settings=settings, keys=load_keys(settings))
    app.add_middleware(DrainGate, drain=state.drain, retry_after=settings.retry_after)
    app.add_middleware(ReplicaHeader)
    app.add_middleware(
        RequestContext, request_timeout=settings.request_timeout, json_logs=settings.log_format == "json"
    )
    errors.install_handlers(app, settings.retry_after)
    for module in (health, openai, adapters, responses, anthropic, chat, slm, generate, ui):
        app.include_router(module.router)
    ui.mount_static(app)
    return app
