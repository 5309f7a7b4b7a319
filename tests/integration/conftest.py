"""Live servers on the bundled model, on free loopback ports, shared by the tests of a session."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from slmserve.server.app import create_app
from slmserve.settings import Settings
from slmserve.tools.launch import free_port


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings
        self.app = create_app(settings)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy in 60 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def metric(self, name: str) -> float:
        """One sample's value from /metrics (first line starting with name)."""
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    live = LiveServer(Settings()).start()  # the defaults: 32 slots, 256 waiting
    yield live
    live.stop()


@pytest.fixture(scope="session")
def tiny_server() -> Iterator[LiveServer]:
    """One slot and one waiting place, for overload behaviour; a 512-token context that one request fills fast."""
    live = LiveServer(Settings(max_running=1, max_waiting=1, retry_after=3, ctx_size=512)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def own_server() -> Iterator[LiveServer]:
    """A server of the test module's own, for tests that unload and reload the model."""
    live = LiveServer(Settings(max_running=8, max_waiting=16)).start()
    yield live
    live.stop()


def chat_body(content: str, **kw) -> dict:
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, **kw}
