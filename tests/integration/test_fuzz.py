"""Schemathesis against the app's own OpenAPI document (issue #15): no 500s, every response as documented.

Each operation gets a bounded number of generated requests, valid ones and ones that break the schema, on a server
whose max_model_len caps any generation at a few dozen tokens, so the whole file runs in well under a minute.
The operations are parametrized here rather than by `schema.parametrize()`: on pytest 9.2 that gives every
operation the same node id.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from slmserve.server.app import create_app
from slmserve.settings import Settings
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.model

# max_model_len bounds every request (prompt + completion) at 64 tokens, whatever max_tokens it asks for; two slots
# and four waiting places bound how many sequences one request (n, a list of prompts, /chat/batched) starts. One
# thread: on a busy 2-core machine llama.cpp's two spinning threads made single requests take from 5 s to 110 s.
SETTINGS = Settings(max_running=2, max_waiting=4, ctx_size=512, max_model_len=64, n_threads=1)
EXAMPLES = 15  # per operation and generation mode: ~35 s for the file on 2 idle cores

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# No secrets here; schemathesis would otherwise print max_tokens as "[Filtered]" in a failing request.
CONFIG = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})
SCHEMA = schemathesis.openapi.from_dict(create_app(SETTINGS).openapi(), config=CONFIG)
# These change the server's state (unload the model): fuzzed last, on this module's own server.
LIFECYCLE = {"POST /slm/load", "POST /slm/unload"}
OPERATIONS = sorted((r.ok() for r in SCHEMA.get_all_operations()), key=lambda op: op.label in LIFECYCLE)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    live = LiveServer(SETTINGS).start()
    yield live
    live.stop()


def cases(operation) -> st.SearchStrategy:
    """Valid requests, and (where there is a body to break) requests the schema forbids."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.body:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_operation(operation, fuzz_server: LiveServer) -> None:
    @given(case=cases(operation))
    @settings(
        max_examples=EXAMPLES * (2 if operation.body else 1),
        deadline=None,
        derandomize=True,  # the same requests on every CI run
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: schemathesis prints the failing request as curl
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        # The engine thread's numpy warnings land here too: a NaN or an inf in sampling answers 200 with garbage.
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", RuntimeWarning)
            case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60)
        numeric = [f"{w.filename}:{w.lineno}: {w.message}" for w in seen if issubclass(w.category, RuntimeWarning)]
        assert not numeric, f"{case.as_curl_command(base_url=fuzz_server.url)}\n" + "\n".join(numeric)

    run()
