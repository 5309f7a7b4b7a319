"""`slmserve cluster` at start and stop (issue #35): a taken port refused before Ray starts; a port an earlier
server left closing (TIME_WAIT), which failed the first start ~18 s in, waited for; a deployment that fails inside
Ray said in two lines, not Ray's traceback; Ray's line naming its idle proxy's port and its noise at a clean stop
gone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from slmserve.tools.launch import free_port
from tests.cluster.conftest import Cluster
from tests.unit.test_cluster_startup import closing_port


def test_a_taken_port_is_refused_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        cli = [sys.executable, "-m", "slmserve.cli", "cluster", "--port", str(port)]
        done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and time.monotonic() - start < 30  # Ray never started
    assert done.stderr.startswith(f"Error: port {port} on 127.0.0.1 is in use by pid ")
    assert "Traceback" not in done.stdout + done.stderr


def test_a_port_still_closing_is_waited_for_and_served_and_the_stop_is_quiet():
    live = Cluster("--replicas", "1", "--threads", "1", port=closing_port())
    try:
        live.wait_healthy(timeout=240)
        assert "TIME_WAIT" in live.log.read_text()
    finally:
        live.stop()
    out = live.log.read_text()
    assert live.proc.returncode == 0
    assert f"serving on {live.url}" in out and "is ready at" not in out
    assert "graceful_shutdown failed" not in out and "Traceback" not in out


def test_a_failed_deployment_says_why_in_two_lines(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file" * 100)
    cli = [sys.executable, "-m", "slmserve.cli", "cluster", "--model", f"junk={junk}", "--port", str(free_port())]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=240)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines[-2].startswith("Error: the ") and "deployment failed: " in lines[-2], lines
    assert lines[-1].startswith("Ray's log: ") and "Traceback" not in done.stdout + done.stderr
