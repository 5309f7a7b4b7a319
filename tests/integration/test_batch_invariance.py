"""The same greedy request alone and among 16 others gives the same tokens (split KV streams, the default)."""

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings


def generate(engine, prompts: dict[str, list[int]], max_tokens: int = 48) -> dict[str, list[int]]:
    for rid, ids in prompts.items():
        engine.add_request(rid, ids, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
    tokens: dict[str, list[int]] = {rid: [] for rid in prompts}
    while engine.has_work:
        for out in engine.step():
            tokens[out.request_id].extend(out.token_ids)
    return tokens


def test_greedy_output_does_not_depend_on_the_batch():
    model = load_model(Settings(max_running=17))
    try:
        encode = model.tokenizer.encode
        render = model.chat_template.render
        target = encode(render([{"role": "user", "content": "What is the capital of France?"}]), add_special=False)
        alone = generate(model.engine, {"t": target})["t"]
        others = {
            f"o{i}": encode(render([{"role": "user", "content": f"Write about topic number {i}."}]), add_special=False)
            for i in range(16)
        }
        crowd = generate(model.engine, {**others, "t": target})
        assert crowd["t"] == alone
        assert len(alone) == 48
        # the others really ran alongside: different prompts, different answers
        assert len({tuple(v) for v in crowd.values()}) > 8
    finally:
        model.close()
