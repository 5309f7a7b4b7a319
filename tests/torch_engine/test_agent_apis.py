"""The Responses and Messages API tests of tests/integration, run on the torch engine: SmolLM2 dequantized."""

from collections.abc import Iterator

import pytest

from tests.integration.conftest import LiveServer
from tests.integration.test_agent_apis import (  # noqa: F401 - the same tests, against this module's server
    claude,
    oai,
    test_a_function_call_round_trip_by_previous_response_id,
    test_messages_create_and_stream,
    test_messages_stop_sequences_and_count_tokens,
    test_messages_tool_use_and_tool_result,
    test_responses_create_answers_and_is_stored,
    test_responses_stream_events_add_up_to_the_answer,
)
from tests.torch_engine.conftest import torch_settings


@pytest.fixture(scope="module")
def live(smollm2_dir, tmp_path_factory) -> Iterator[LiveServer]:
    state = tmp_path_factory.mktemp("state")
    server = LiveServer(
        torch_settings(smollm2_dir, max_running=8, state_dir=str(state), served_model_name="smollm2-135m-instruct")
    ).start()
    yield server
    server.stop()
