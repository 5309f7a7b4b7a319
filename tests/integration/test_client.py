"""slmserve.client against a live server."""

import asyncio
import json
import os
import subprocess

import pytest

from slmserve.client import AsyncClient, Client, SlmServeError


def test_sync_client_chat_stream_generate_batched(server):
    with Client(server.url) as c:
        assert c.health()["status"] == "healthy"
        answer = c.chat("Name a colour.", max_tokens=12, temperature=0)
        assert answer and "".join(c.stream("Name a colour.", max_tokens=12, temperature=0)) == answer
        g = c.generate("The sky is", max_length=20)
        assert g["generated_text"].startswith("The sky is")
        b = c.batched([{"chat_id": "a", "user_prompt": "Hi", "max_tokens": 4}, {"chat_id": "b"}])
        assert b["results"][0]["status"] == 200 and b["results"][1]["status"] == 422


def test_errors_carry_the_status_and_the_servers_message(server):
    with Client(server.url) as c:
        with pytest.raises(SlmServeError) as exc:
            c.chat("I hate it")
        assert exc.value.status == 400 and exc.value.message == "Prompt contains inappropriate content"
        with pytest.raises(SlmServeError) as exc:
            c.generate("")
        assert exc.value.status == 422 and "at least 1 character" in exc.value.message
        with pytest.raises(SlmServeError) as exc:
            list(c.stream("hi", model="nope"))
        assert exc.value.status == 404


def test_async_client_runs_requests_concurrently(server):
    async def main():
        async with AsyncClient(server.url) as c:
            answers = await asyncio.gather(*(c.chat(f"Count to {i}.", max_tokens=8, temperature=0) for i in range(4)))
            pieces = [p async for p in c.stream("Say hello.", max_tokens=8, temperature=0)]
            return answers, pieces, await c.chat("Say hello.", max_tokens=8, temperature=0)

    answers, pieces, hello = asyncio.run(main())
    assert len(answers) == 4 and all(answers)
    assert "".join(pieces) == hello


def test_request_sh_prints_the_assistant_message(server):
    env = {**os.environ, "SLMSERVE_URL": server.url}
    r = subprocess.run(["bash", "examples/request.sh", "Hello, how are you?"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    messages = json.loads(r.stdout)
    assert messages[0]["role"] == "assistant" and messages[0]["content"]
