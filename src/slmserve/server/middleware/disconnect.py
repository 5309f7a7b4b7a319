"""Cancel a request's handler when its client hangs up, so nobody's generation keeps a slot.

Starlette notices a disconnect only while it streams a response. A client of a plain (non-streaming) completion
that times out or closes its socket would otherwise leave its request decoding to max_tokens; with many of them
the slots fill with work no one will read. vLLM does the same (`with_cancellation`), per route; this middleware
does it for every route, by listening for `http.disconnect` once the handler has read the request body.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read, gone = asyncio.Event(), asyncio.Event()

        async def app_receive() -> Message:
            # Once the body is in, the only message left is the disconnect: the watcher hears it for both.
            if body_read.is_set():
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def watch() -> None:
            await body_read.wait()
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # noqa: BLE001 - a receive that fails (Ray Serve's, when its task is cancelled) is a hang-up
                pass
            gone.set()

        handler = asyncio.ensure_future(self.app(scope, app_receive, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not handler.done():
                handler.cancel()  # the client is gone (or the server stops): the handler's finally blocks abort
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            try:
                await handler
            except asyncio.CancelledError:
                if not gone.is_set():
                    raise
