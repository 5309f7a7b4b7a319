"""Start `slmserve serve` as a child process for a tool, wait for /health, and stop it afterwards.

A child process, not the engine in the tool's own process: compare measures each model's load time and resident
memory by itself, and one model's memory must be gone before the next one loads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from slmserve.settings import Settings
from slmserve.tools.plots import ToolsMissing


class ServerFailed(RuntimeError):
    """The server exited or did not become healthy; the message ends with its last log lines."""


@dataclass
class Served:
    url: str
    pid: int
    load_s: float  # process start to the first /health 200 (the model loaded)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on host now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """SLMSERVE_* variables for the settings given explicitly (flags), so the child serves what the tool was told."""
    env = {}
    for name in settings.model_fields_set - {"host", "port"}:
        value = getattr(settings, name)
        if value is not None:
            env[f"SLMSERVE_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


@contextmanager
def serve(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> Iterator[Served]:
    """`slmserve serve ARGS` on a free loopback port; yields once /health answers 200, stops the process on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "slmserve.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(url, proc, timeout)
            except ServerFailed as exc:
                raise ServerFailed(f"`slmserve serve` failed: {exc}:\n{_tail(log)}") from exc
            yield Served(url=url, pid=proc.pid, load_s=time.perf_counter() - start)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, path: str = "/health") -> None:
    """Return once url+path answers 200; ServerFailed if proc exits first or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{url}: the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise ServerFailed(f"{url} was not healthy after {timeout:.0f} s")


def _tail(log, lines: int = 15) -> str:
    log.seek(0)
    return "".join(log.readlines()[-lines:]).rstrip()


def require_psutil() -> None:
    """compare reads memory with psutil (the tools extra); say so before any model loads."""
    try:
        import psutil  # noqa: F401
    except ImportError as exc:
        raise ToolsMissing(
            "compare measures memory with psutil, which is not installed: pip install 'slmserve[tools]'"
        ) from exc


class RssSampler(threading.Thread):
    """The served process's resident memory (with any children), every 0.1 s, until stopped; needs psutil."""

    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True)
        self._proc, self._error = psutil.Process(pid), psutil.Error
        self.peak, self._done = 0, threading.Event()  # not _stop: Thread has one

    def now(self) -> int:
        """Bytes resident now; 0 once the process is gone."""
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except self._error:
            return 0

    def run(self) -> None:
        while not self._done.wait(0.1):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, self.now())
