"""In-process engine throughput: N requests at once through Engine.generate, no HTTP. Prints figures, writes JSON.

Each concurrency level runs N chat requests ("Tell me a story about a cat. (#i)") of --max-tokens greedy tokens
(EOS ignored, so every request yields exactly that many) and reports aggregate tokens/s over the whole run,
prefill included. --random-weights builds the model from --model's config.json with random weights: used on a
lent GPU machine, where the real weights cannot travel; speed does not depend on the weights' values.

    python scripts/bench_engine.py --engine torch --device cpu --concurrency 1,8,32,64 --json out.json
    python scripts/bench_engine.py --model DIR --random-weights --device cuda --concurrency 1,32,128
    python scripts/bench_engine.py --device cpu --concurrency 32 --lora-mix 2   # the cost of LoRA adapters
    python scripts/bench_engine.py --engine llama.cpp --concurrency 1,8,32 --lora-mix 1 --rounds 3
    python scripts/bench_engine.py --device cuda --concurrency 1,32 --peer generate

--peer generate also runs transformers' own `generate` at each level, in the same process on the same device and
dtype: the same prompts as one static batch, left-padded, greedy, exactly --max-tokens new tokens each.
--peer matmul times the model's matrices alone: every linear layer and the LM head as plain `x @ W.T` on N rows,
N tokens a round: what plain PyTorch products cost with no attention, norms or Python. It is not the engine's
ceiling, whose `linear` (llama_forward.py) multiplies in MKL's faster form; these shared machines vary by 10%
from minute to minute, so compare the engine with it in the same run.

--lora-mix K adds K random rank-8 adapters (all linear layers, as `slmserve finetune` makes them) and runs each
level three ways: every request on the base model, every request on one adapter, and requests spread round-robin
over the base model and the K adapters (all in the same steps).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings


def random_model(config_dir: str, config=None) -> str:
    """A model directory with random weights (seed 0): config_dir's config, or `config`, and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="slmserve-random-")
    AutoModelForCausalLM.from_config(config or AutoConfig.from_pretrained(config_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU"


def random_adapters(model_name: str, k: int) -> dict[str, str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from slmserve.finetune import base_model_path

    base = base_model_path(model_name, Settings().cache_dir)
    out = {}
    for i in range(k):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
        out[f"a{i}"] = tempfile.mkdtemp(prefix="slmserve-lora-")
        get_peft_model(model, config).save_pretrained(out[f"a{i}"])
    return out


def chat_ids(model, text: str) -> list[int]:
    """The prompt tokens of one user message, rendered with the model's chat template."""
    return model.tokenizer.encode(model.chat_template.render([{"role": "user", "content": text}]), False)


def bench_prompts(model, n: int) -> dict[str, list[int]]:
    return {f"r{i}": chat_ids(model, f"Tell me a story about a cat. (#{i})") for i in range(n)}


def run_generate(hf_model, prompts: dict[str, list[int]], max_tokens: int, pad_id: int) -> dict:
    """transformers' generate on the prompts as one static batch (left-padded): the peer the engine must beat."""
    import torch

    rows = list(prompts.values())
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=hf_model.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=hf_model.device)
    kwargs = dict(do_sample=False, pad_token_id=pad_id, eos_token_id=None)
    with torch.inference_mode():
        hf_model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=8, **kwargs)  # warm-up
        sync(hf_model.device)
        start = time.perf_counter()
        out = hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                min_new_tokens=max_tokens, **kwargs)  # fmt: skip
        sync(hf_model.device)
        seconds = time.perf_counter() - start
    tokens = (out.shape[1] - width) * len(rows)
    return {"concurrency": len(rows), "adapters": ["generate"], "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_level(model, n: int, max_tokens: int, adapters: list[str | None] = (None,)) -> dict:
    prompts = bench_prompts(model, n)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    model.engine.generate({"warm": prompts["r0"]}, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    which = {key: adapters[i % len(adapters)] for i, key in enumerate(prompts)}
    start = time.perf_counter()
    out = model.engine.generate(prompts, params, which)
    seconds = time.perf_counter() - start
    tokens = sum(len(v) for v in out.values())
    return {
        "concurrency": n,
        "adapters": [a or "base" for a in adapters],
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def _median_row(runs: list[dict]) -> dict:
    """One run's row with the median tok/s over the rounds and each round's figure in tokens_per_s_all."""
    rates = sorted(r["tokens_per_s"] for r in runs)
    row = dict(runs[0], tokens_per_s=statistics.median(rates), tokens_per_s_all=[r["tokens_per_s"] for r in runs])
    row["seconds"] = statistics.median(r["seconds"] for r in runs)
    return row


def peer_matmul(model, levels: list[int], rounds: int = 20) -> list[dict]:
    import torch

    weights = [m.weight for m in model.runner.model.modules() if isinstance(m, torch.nn.Linear)]
    results = []
    with torch.inference_mode():
        for n in levels:
            xs = {w.shape[1]: torch.randn(n, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
            for w in weights:  # warm-up
                torch.nn.functional.linear(xs[w.shape[1]], w)
            sync(model.device)
            start = time.perf_counter()
            for _ in range(rounds):
                for w in weights:
                    torch.nn.functional.linear(xs[w.shape[1]], w)
            sync(model.device)
            seconds = time.perf_counter() - start
            results.append({"concurrency": n, "adapters": ["matmul only"], "tokens": n * rounds,
                            "seconds": round(seconds, 3), "tokens_per_s": round(n * rounds / seconds, 1)})  # fmt: skip
    return results


def peer_generate(model, model_path: str, levels: list[int], max_tokens: int) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from slmserve.finetune import base_model_path

    dtype = model.runner.model.dtype
    hf_model = AutoModelForCausalLM.from_pretrained(base_model_path(model_path, Settings().cache_dir), dtype=dtype)
    hf_model = hf_model.to(model.device).eval()
    pad_id = hf_model.config.pad_token_id or hf_model.config.eos_token_id or 0
    if isinstance(pad_id, list):
        pad_id = pad_id[0]
    return [run_generate(hf_model, bench_prompts(model, n), max_tokens, pad_id) for n in levels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", default="torch", choices=["torch", "llama.cpp"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--random-weights", action="store_true", help="random weights from --model's config")
    parser.add_argument("--lora-mix", type=int, default=0, help="K random adapters: base, one, mixed runs")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; figures are their medians")
    parser.add_argument("--kv-unified", action="store_true", help="llama.cpp: one KV buffer for all slots")
    parser.add_argument("--peer", default="", help="comma-separated: generate, matmul (see above)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    peers = set(filter(None, args.peer.split(",")))
    if peers - {"generate", "matmul"}:
        parser.error(f"unknown --peer {args.peer!r}: generate, matmul")
    model_path = random_model(args.model) if args.random_weights else args.model
    slots = max(levels)
    settings = Settings(
        model=model_path, engine=args.engine, device=args.device, dtype=args.dtype, max_running=slots,
        ctx_size=slots * 512, max_waiting=max(256, slots), kv_unified=args.kv_unified,
    )  # fmt: skip
    model = load_model(settings)
    mixes: list[list[str | None]] = [[None]]
    if args.lora_mix:
        for name, path in random_adapters(model_path, args.lora_mix).items():
            model.runner.load_adapter(name, path)
        mixes += [["a0"], [None, *model.runner.adapters]]
    # Rounds alternate the runs (base, adapter, mixed, base, ...) so a slow minute of a shared machine falls on
    # all of them; each figure is the median over the rounds, with every round's tok/s kept beside it.
    rounds = [[run_level(model, n, args.max_tokens, mix) for n in levels for mix in mixes] for _ in range(args.rounds)]
    results = [_median_row([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    if "matmul" in peers:
        results += peer_matmul(model, levels)
    if "generate" in peers:
        results += peer_generate(model, model_path, levels, args.max_tokens)
    report = {
        "engine": args.engine,
        "model": args.model + (" (random weights)" if args.random_weights else ""),
        "device": model.device,
        "device_name": device_name(model.device),
        "dtype": args.dtype,
        "max_tokens": args.max_tokens,
        "kv_unified": args.kv_unified,
        "results": results,
    }
    model.close()
    print(f"{report['engine']} on {report['device_name']} ({report['device']}), {report['model']}")
    for r in results:
        on = "+".join(r["adapters"])
        rate, n = r["tokens_per_s"], r["concurrency"]
        print(f"  concurrency {n:>4}, {on}: {rate:>8.1f} tok/s ({r['tokens']} in {r['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
