"""The same greedy request alone and among 16 others gives the same tokens (split KV streams, the default)."""

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings


def test_greedy_output_does_not_depend_on_the_batch():
    model = load_model(Settings(max_running=17))
    try:
        encode = model.tokenizer.encode
        render = model.chat_template.render
        target = encode(render([{"role": "user", "content": "What is the capital of France?"}]), add_special=False)
        params = SamplingParams(max_tokens=48, temperature=0, ignore_eos=True)
        alone = model.engine.generate({"t": target}, params)["t"]
        others = {
            f"o{i}": encode(render([{"role": "user", "content": f"Write about topic number {i}."}]), add_special=False)
            for i in range(16)
        }
        crowd = model.engine.generate({**others, "t": target}, params)
        assert crowd["t"] == alone
        assert len(alone) == 48
        # the others really ran alongside: different prompts, different answers
        assert len({tuple(v) for v in crowd.values()}) > 8
    finally:
        model.close()
