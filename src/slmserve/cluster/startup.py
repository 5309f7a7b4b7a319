"""What can stop `slmserve cluster` from starting, found before Ray starts where it can be, and said in a line or
two where it cannot: the port, and a deployment that failed inside Ray (whose cause is only in Ray's logs).

No Ray import: the port checks run before Ray starts, and the log reading is tested on a written log.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

# Linux holds a TIME_WAIT connection for 60 s (TCP_TIMEWAIT_LEN); a little more for the last one to go.
TIME_WAIT_S = 62.0


class ClusterFailed(RuntimeError):
    """The cluster did not start; the message says why in a line or two (no traceback)."""


def port_state(host: str, port: int) -> str:
    """'free'; 'closing' when only connections in TIME_WAIT hold the port (an earlier server on it closed them
    within the last minute); 'taken' when a process listens on it (or the bind is refused otherwise)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))  # as Ray's direct-ingress replica binds: no SO_REUSEADDR
            return "free"
        except OSError:
            pass
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT no longer counts
        try:
            s.bind((host, port))
            return "closing"
        except OSError:
            return "taken"


def listener(port: int) -> str:
    """'pid N (command line)' of the process listening on port, if psutil can tell; else ''."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline())[:80]})"
    except Exception:  # no psutil, no permission, the process gone: the port's number says enough
        pass
    return ""


def check_port(host: str, port: int) -> None:
    """ClusterFailed at once if a process listens on host:port: Ray would take ~20 s to fail on it."""
    if port_state(host, port) == "taken":
        who = listener(port)
        raise ClusterFailed(f"port {port} on {host} is in use{' by ' + who if who else ''}: stop it or pick --port")


def wait_port_free(host: str, port: int, say: Callable[[str], None] = print, timeout: float = TIME_WAIT_S) -> None:
    """Return once a bind without SO_REUSEADDR to host:port succeeds.

    Ray's direct-ingress gateway binds so, and gives up on the first failure: its port range is this one port,
    and it blocks a port it could not bind ("NoAvailablePortError ... for RequestProtocol.HTTP", the deployment
    failed). A server that stopped on the port in the last minute leaves connections in TIME_WAIT that fail such
    a bind, so the first start after it failed and a start a minute later worked (issue #35).
    """
    deadline = time.monotonic() + timeout
    state = port_state(host, port)
    if state == "closing":
        say(
            f"slmserve cluster: port {port} still holds connections of an earlier server, closing (TIME_WAIT); "
            f"waiting up to {timeout:.0f} s for them to go"
        )
    while state == "closing" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = port_state(host, port)
    if state != "free":
        check_port(host, port)
        raise ClusterFailed(f"port {port} on {host} was still closing after {timeout:.0f} s")


# The last line of a traceback: "module.path.SomeError: message".
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit)): (.+)$")
_REPLICA = re.compile(r"Exception in Replica\(.*deployment='([^']+)'")
_WRAPPERS = ("RayTaskError", "RayActorError")
_LONG_ID = re.compile(r"\b[0-9a-f]{24,}\b")  # Ray's node and actor ids: 56 hex digits say nothing to a user


def deploy_failure(session_dir: str | Path) -> tuple[str, str, Path] | None:
    """(deployment, 'SomeError: message', log file) of the last replica failure Ray's controller logged in
    session_dir (logs/serve/controller_*.log), or None when it logged none."""
    found = None
    for path in sorted(Path(session_dir, "logs", "serve").glob("controller_*.log")):
        deployment = None
        for line in path.read_text(errors="replace").splitlines():
            if m := _REPLICA.search(line):
                deployment = m.group(1)
            elif deployment and (m := _EXCEPTION.match(line)):
                name, message = m.groups()
                if name not in _WRAPPERS and not message.startswith("Traceback"):
                    found = (deployment, f"{name}: {_LONG_ID.sub('…', message)}", path)
    return found


def failure_message(session_dir: str | Path | None, host: str, port: int, direct_ingress: bool) -> str:
    """Why the deployment failed, in two lines: the cause Ray logged, then what to do or where the log is."""
    found = deploy_failure(session_dir) if session_dir else None
    if found is None:
        return f"the cluster's deployment failed; Ray's logs: {session_dir or 'its session directory'}/logs/serve"
    deployment, cause, path = found
    if direct_ingress and deployment == "gateway" and cause.startswith("NoAvailablePortError"):
        hint = (
            f"the gateway could not bind {host}:{port}: another process took it, or an earlier server's "
            "connections on it were still closing (TIME_WAIT, up to a minute)"
        )
    else:
        hint = f"Ray's log: {path}"
    return f"the {deployment} deployment failed: {cause}\n{hint}"
