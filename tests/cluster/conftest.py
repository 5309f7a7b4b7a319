"""A local Ray Serve cluster (`slmserve cluster`): a gateway and 2 model-host replicas of one thread each,
started once for the module's tests, in its own session so a signal to it reaches only it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from slmserve.tools.launch import ServerFailed, free_port, wait_healthy

HOST_TITLE = "ServeReplica:slmserve:host-"


class Cluster:
    def __init__(self, *args: str, port: int | None = None) -> None:
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"slmserve-cluster-{port}.log"
        cli = [sys.executable, "-m", "slmserve.cli", "cluster", "--port", str(port), *args]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cli, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 180) -> Cluster:
        try:
            wait_healthy(self.url, self.proc, timeout)
        except ServerFailed as exc:
            raise RuntimeError(f"{exc}:\n{self.log.read_text()[-3000:]}") from exc
        return self

    def processes(self) -> list[psutil.Process]:
        """The cluster's processes: the command and everything it started (Ray's head, workers, replicas)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def listener(self) -> str:
        """The command line of the process that listens on the cluster's port."""
        port = urlparse(self.url).port
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid is not None:
                try:
                    return " ".join(psutil.Process(conn.pid).cmdline())
                except psutil.Error:  # gone meanwhile: look on
                    continue
        return ""

    def hosts(self) -> list[psutil.Process]:
        """The live model-host replica processes."""
        out = []
        for p in self.processes():
            try:
                if any(HOST_TITLE in part for part in p.cmdline()):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                for p in self.processes():
                    p.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # 8 slots and 24 waiting places a replica: 2 replicas hold 64 requests, and Ray's queue 24 more; past
    # that, 429. Small enough that the backpressure test can reach it. Direct ingress, the default.
    live = Cluster("--replicas", "2", "--threads", "1", "--max-running", "8", "--max-waiting", "24")
    live.wait_healthy()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def proxy() -> Iterator[Cluster]:
    """`--ray-proxy`, one replica: every request through Ray's proxy actor."""
    live = Cluster("--ray-proxy", "--replicas", "1", "--threads", "1", "--max-running", "8")
    live.wait_healthy()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def autoscaling() -> Iterator[Cluster]:
    """Between 1 and 2 replicas, aiming at 4 requests a replica, quick to react either way."""
    live = Cluster(
        "--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "4", "--upscale-delay", "1",
        "--downscale-delay", "3", "--threads", "1", "--max-running", "8",
    )  # fmt: skip
    live.wait_healthy()
    yield live
    live.stop()
