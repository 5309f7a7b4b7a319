"""The cluster's start checks without Ray (cluster/startup.py): a port's state as Ray's gateway would find it, the
wait for an earlier server's closing connections, and the cause of a failed deployment read from Ray's log."""

from __future__ import annotations

import socket
import time

import pytest

from slmserve.cluster.startup import ClusterFailed, check_port, deploy_failure, failure_message, wait_port_free


def closing_port() -> int:
    """A port with a connection in TIME_WAIT on it: a server that closed its side first, then stopped."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()
        time.sleep(0.05)
        client.close()
    return port


def test_a_listening_port_is_refused_with_its_number():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ClusterFailed, match=f"port {port} on 127.0.0.1 is in use"):
            check_port("127.0.0.1", port)


def test_aclosing_port_is_waited_for_and_a_free_one_is_not():
    port = closing_port()
    said = []
    with pytest.raises(ClusterFailed, match="still closing after 1 s"):
        wait_port_free("127.0.0.1", port, said.append, timeout=1)
    assert "TIME_WAIT" in said[0] and str(port) in said[0]
    check_port("127.0.0.1", port)  # closing connections are no reason to refuse the start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    said.clear()
    wait_port_free("127.0.0.1", free, said.append, timeout=1)
    assert said == []


# What Ray 2.60's controller logged when the gateway could not bind a port in TIME_WAIT (abridged; issue #35).
CONTROLLER_LOG = """\
INFO 2026-12-07 18:40:35,906 controller 22962 -- Allocated RequestProtocol.HTTP port 34205 to replica nfibh3an
ERROR 2026-12-07 18:40:35,988 controller 22962 -- Exception in Replica(id='nfibh3an', deployment='gateway', \
app='slmserve'), the replica will be stopped.
Traceback (most recent call last):
ray.exceptions.RayTaskError(RuntimeError): ray::ServeReplica:slmserve:gateway.initialize_and_get_metadata()
    raise RuntimeError(traceback.format_exc()) from None
RuntimeError: Traceback (most recent call last):
ray.exceptions.RayTaskError: ray::ServeController.allocate_replica_port() (pid=22962, ip=192.0.2.2)
    raise NoAvailablePortError(self._protocol, self._node_id)
ray.serve._private.node_port_manager.NoAvailablePortError: No available ports on node \
12e0ca429fa77737c5c0e3268af458cb9739f75ab92b2c5910b4a741 for RequestProtocol.HTTP protocol.
ERROR 2026-12-07 18:40:40,387 controller 22962 -- Failed to update the deployments ['gateway'].
"""


def test_the_cause_of_a_failed_deployment_is_read_from_rays_controller_log(tmp_path):
    logs = tmp_path / "logs" / "serve"
    logs.mkdir(parents=True)
    (logs / "controller_22962.log").write_text(CONTROLLER_LOG)
    deployment, cause, path = deploy_failure(tmp_path)
    assert deployment == "gateway" and path == logs / "controller_22962.log"
    assert cause == "NoAvailablePortError: No available ports on node … for RequestProtocol.HTTP protocol."
    lines = failure_message(tmp_path, "127.0.0.1", 34205, direct_ingress=True).splitlines()
    assert len(lines) == 2 and lines[0].startswith("the gateway deployment failed: NoAvailablePortError")
    assert "could not bind 127.0.0.1:34205" in lines[1] and "TIME_WAIT" in lines[1]
    # Another cause points at the log; no log at all points at where Ray keeps them.
    (logs / "controller_22962.log").write_text(CONTROLLER_LOG.replace("NoAvailablePortError", "ValueError"))
    assert failure_message(tmp_path, "127.0.0.1", 34205, True).splitlines()[1] == f"Ray's log: {path}"
    assert "logs/serve" in failure_message(tmp_path / "none", "127.0.0.1", 34205, True)
