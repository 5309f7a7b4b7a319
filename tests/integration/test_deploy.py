"""Deploy files: the Procfile run by honcho as a PaaS would, and deploy/Dockerfile checked against the real CLI and app.

Docker is not available where the tests run, so the Dockerfile is read, not built: its command line must parse as
`slmserve serve` flags, its HEALTHCHECK must pass against a live server and fail against none, its ports must agree,
and the .dockerignore must let through what the build copies and nothing else.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import httpx
import psutil
import typer

from slmserve.cli import app as cli
from slmserve.server.app import create_app
from slmserve.settings import Settings
from slmserve.tools.launch import free_port, wait_healthy
from tests.integration.conftest import chat_body

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # where honcho and the slmserve script are installed


def test_the_procfile_serves_under_honcho_and_stops_cleanly_on_sigterm():
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    honcho = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "start"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, honcho, 60)
        question = chat_body("What is the capital of France?", max_tokens=8)  # few tokens: a busy CPU is slow
        r = httpx.post(f"{url}/v1/chat/completions", json=question, timeout=60)
        assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]
        stopping = time.monotonic()
        honcho.send_signal(signal.SIGTERM)  # what a PaaS sends to stop a dyno
        output, _ = honcho.communicate(timeout=20)
    finally:
        if honcho.poll() is None:  # a failed check: honcho stops its processes on SIGTERM; KILL would orphan them
            honcho.terminate()
            honcho.wait(timeout=30)
    assert time.monotonic() - stopping < 15, output
    assert honcho.returncode == 128 + signal.SIGTERM, output  # honcho's own exit status after a SIGTERM
    # The server shut down gracefully (lifespan ran: engine stopped, model closed) instead of being killed ...
    assert "Application shutdown complete" in output and "SIGKILL" not in output, output
    # ... and left nothing running in the process group honcho started for the web process.
    group = int(re.search(r"web\.1 started \(pid=(\d+)\)", output)[1])
    deadline = time.monotonic() + 5
    while running_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running_in_group(group), output


def running_in_group(group: int) -> list[int]:
    """Live processes of a process group. Zombies have exited: an init that does not reap them may keep them listed."""
    pids = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(process.pid)
    return pids


def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "deploy" / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    found = []
    for instruction, args in dockerfile():
        if instruction == "FROM":
            found.append([])
        found[-1].append((instruction, args))
    return found


def args_of(stage, instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def healthcheck_code() -> str:
    (line,) = args_of(stages()[-1], "HEALTHCHECK")
    command = json.loads(line.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"], "the slim image has python, not curl"
    return command[2]


def test_the_dockerfile_builds_in_one_stage_and_runs_slim_as_a_user():
    build, runtime = stages()
    assert build[0][1] == "python:3.11-slim AS build" and runtime[0][1] == "python:3.11-slim"
    assert any("build-essential" in a and "cmake" in a for a in args_of(build, "RUN"))
    assert any(a.startswith("pip wheel") for a in args_of(build, "RUN"))
    runs = " ".join(args_of(runtime, "RUN"))
    assert "cmake" not in runs and "build-essential" not in runs  # no compilers in the image that ships
    assert "from=build" in runs and "--no-index" in runs  # the runtime installs the built wheels, nothing else
    (user,) = args_of(runtime, "USER")
    assert user not in ("root", "0") and f"useradd --create-home --uid 10001 {user}" in runs


def test_the_docker_command_is_slmserve_serve_on_the_exposed_port_with_a_real_health_route():
    command = json.loads(args_of(stages()[-1], "CMD")[0])
    assert command[:2] == ["slmserve", "serve"]
    serve = typer.main.get_command(cli).commands["serve"]
    params = serve.make_context("serve", command[2:]).params  # refuses flags serve does not have
    assert params["host"] == "0.0.0.0"
    (exposed,) = args_of(stages()[-1], "EXPOSE")
    url = httpx.URL(re.search(r"'(http://[^']+)'", healthcheck_code())[1])
    assert int(exposed) == int(params["port"]) == url.port
    assert "get" in create_app(Settings()).openapi()["paths"][url.path]  # a real route, answering GET
    assert Settings().model == "smollm2-135m-instruct"  # no --model: the image serves the bundled model


def test_the_docker_healthcheck_passes_on_a_healthy_server_and_fails_without_one(server):
    code = healthcheck_code()
    healthy = code.replace("http://127.0.0.1:8000", server.url)
    nobody = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{free_port()}")
    assert healthy != code
    assert subprocess.run([sys.executable, "-c", healthy], capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([sys.executable, "-c", nobody], capture_output=True, timeout=30).returncode != 0


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        if any(fnmatch("/".join(parts[:i]), pattern.lstrip("!")) for i in range(1, len(parts) + 1)):
            result = not pattern.startswith("!")
    return result


def test_the_dockerignore_lets_through_what_the_build_copies_and_keeps_the_rest_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    copied = [a.split()[:-1] for a in args_of(stages()[0], "COPY")]
    sources = [s for args in copied for s in args]
    assert sources == ["pyproject.toml", "README.md", "src"]
    package = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*")
        if p.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
    ]  # sources, not what the local install made
    assert "src/slmserve/server/static/dashboard.js" in package
    for path in ["pyproject.toml", "README.md", *package]:
        assert not ignored(path, patterns), path
    for path in [".venv/bin/python", ".git/HEAD", "tests/fakes.py", "docs/dashboard.png", ".env"]:
        assert ignored(path, patterns), path
