"""The embeddings and tokenize tests of tests/integration, run on the torch engine; and the two engines agree."""

from collections.abc import Iterator

import numpy as np
import pytest

from slmserve.engine.runner_llamacpp import LlamaCppRunner
from slmserve.models.registry import KNOWN_MODELS
from tests.integration.conftest import LiveServer
from tests.integration.test_embeddings import *  # noqa: F403 - the same tests, against this module's server
from tests.integration.test_embeddings import SENTENCES, embed, vectors
from tests.torch_engine.conftest import torch_settings


@pytest.fixture(scope="module")
def server(smollm2_dir) -> Iterator[LiveServer]:
    live = LiveServer(torch_settings(smollm2_dir, max_running=8)).start()
    yield live
    live.stop()


def test_torch_embeddings_match_llama_cpp_on_the_same_weights(server):
    """The torch model is the bundled GGUF dequantized, so both engines' mean pooling must give the same vectors."""
    runner = LlamaCppRunner(
        KNOWN_MODELS["smollm2-135m-instruct"].path(), n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2
    )
    try:
        tokens = [runner.tokenizer.encode(s) for s in SENTENCES]
        ours = runner.embed(tokens)  # each input's sum of hidden states: cosines as of its mean
    finally:
        runner.close()
    theirs = vectors(embed(server, input=tokens))
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    assert np.all(np.sum(ours * theirs, axis=1) > 0.99)
