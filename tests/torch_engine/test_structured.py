"""The structured-output tests of tests/integration, run on the torch engine: SmolLM2 dequantized from the GGUF."""

from collections.abc import Iterator

import pytest

from tests.integration.conftest import LiveServer
from tests.integration.test_structured_outputs import *  # noqa: F403 - the same tests, against this module's server
from tests.torch_engine.conftest import torch_settings


@pytest.fixture(scope="module")
def server(smollm2_dir) -> Iterator[LiveServer]:
    live = LiveServer(torch_settings(smollm2_dir, max_running=16)).start()
    yield live
    live.stop()
