"""The torch engine loads on a thread of its own that has ended by the time load_model returns.

Any thread that runs a parallel torch op keeps an OpenMP team for its life; a second team beside the engine
thread's makes libgomp stop spinning between parallel regions, and each step got ~12% slower (see hf_models.load).
"""

from __future__ import annotations

import threading

from slmserve.engine.loader import load_model
from slmserve.engine.runner_torch import TorchRunner
from slmserve.engine.sampling import SamplingParams
from tests.torch_engine.conftest import torch_settings


def test_the_weights_are_loaded_on_a_thread_that_has_ended(tiny_llama, monkeypatch):
    built_on = []
    build = TorchRunner.__init__

    def spy(self, *args, **kwargs):
        built_on.append(threading.current_thread())
        build(self, *args, **kwargs)

    monkeypatch.setattr(TorchRunner, "__init__", spy)
    model = load_model(torch_settings(tiny_llama, max_running=2))
    try:
        assert len(built_on) == 1
        assert built_on[0] is not threading.current_thread()
        assert not built_on[0].is_alive()
        out = model.engine.generate({"a": [1, 2, 3]}, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
        assert len(out["a"]) == 4
    finally:
        model.close()
