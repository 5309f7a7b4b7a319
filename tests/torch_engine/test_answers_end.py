"""The answers-that-end tests of tests/integration (issue 31), run on the torch engine: SmolLM2 dequantized."""

from collections.abc import Iterator

import pytest

from tests.integration.conftest import LiveServer
from tests.integration.test_answers_end import *  # noqa: F403 - the same tests, against this module's server
from tests.torch_engine.conftest import torch_settings


@pytest.fixture(scope="module")
def server(smollm2_dir) -> Iterator[LiveServer]:
    live = LiveServer(torch_settings(smollm2_dir, max_running=16)).start()
    yield live
    live.stop()
