"""The app in-process on a scripted model (no weights): the HTTP contract, fast."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from slmserve.engine.loader import LoadedModel
from slmserve.models.chat_template import ChatTemplate
from slmserve.server.app import create_app
from slmserve.settings import Settings
from tests.fakes import ChatRunner, make_engine


class Served(TestClient):
    """A client of the app, with the prompts its engine was given (as text)."""

    prompts: list[str]


@pytest.fixture
def serve(tmp_path):
    """serve(script=b"...", **settings) -> a client of an app whose model writes `script` to every request, then
    its end of text. Stored state goes under tmp_path unless the settings say otherwise. raise_server_exceptions:
    False to see a 500 as the client does (else the test raises the server's exception). runner: a ChatRunner of
    the test's own instead."""
    clients: list[Served] = []

    def start(
        script: bytes = b"hello world",
        raise_server_exceptions: bool = True,
        runner: ChatRunner | None = None,
        **settings,
    ) -> Served:
        runner = runner or ChatRunner(script)
        engine = make_engine(runner, kv_capacity=4096)
        prompts: list[str] = []
        add = engine.add_request

        def recording(request_id, prompt_token_ids, *args, **kw):
            prompts.append(runner.tokenizer.decode(prompt_token_ids))
            return add(request_id, prompt_token_ids, *args, **kw)

        engine.add_request = recording
        model = LoadedModel("fake", None, engine, runner, runner.tokenizer, ChatTemplate(None, "", ""), 2048)
        settings = {"model": "fake", "state_dir": str(tmp_path / "state")} | settings
        client = Served(create_app(Settings(**settings), model), raise_server_exceptions=raise_server_exceptions)
        client.prompts = prompts
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)
