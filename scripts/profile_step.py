"""Where a torch-engine step's time goes: the engine's phases timed, then torch.profiler's op table.

N greedy requests decode together; after 20 steps, 5 steps run under torch.profiler. Prints milliseconds a step
for the whole step, the runner's forward (logits on the host included), postprocessing (sampling, detokenizing)
and scheduling; on CUDA also the kernels launched a step and the time the GPU was busy.

    python scripts/profile_step.py --device cpu --concurrency 32
    python scripts/profile_step.py --model DIR --random-weights --device cuda --dtype float32,bfloat16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from bench_engine import bench_prompts, random_model

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings


def timed(totals: dict[str, float], key: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


def profile(model_path: str, device: str, dtype: str, n: int, rows: int) -> None:
    model = load_model(Settings(
        model=model_path, engine="torch", device=device, dtype=dtype, max_running=n, ctx_size=n * 512,
        max_waiting=max(256, n),
    ))  # fmt: skip
    engine = model.engine
    totals = dict.fromkeys(("forward", "postprocess", "schedule"), 0.0)
    model.runner.run = timed(totals, "forward", model.runner.run)
    engine._postprocess = timed(totals, "postprocess", engine._postprocess)
    engine.scheduler.schedule = timed(totals, "schedule", engine.scheduler.schedule)
    engine.generate({"warm": bench_prompts(model, 1)["r0"]}, SamplingParams(max_tokens=8, temperature=0))
    totals.update(dict.fromkeys(totals, 0.0))
    for request_id, ids in bench_prompts(model, n).items():
        engine.add_request(request_id, ids, SamplingParams(max_tokens=128, temperature=0, ignore_eos=True))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    steps, start = 0, time.perf_counter()
    while engine.has_work:
        engine.step()
        steps += 1
        if steps == 20:
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(5):
                    engine.step()
            steps += 5
    wall = time.perf_counter() - start
    model.close()
    per = {k: 1000 * v / steps for k, v in totals.items()}
    print(f"\n{device} {dtype}, {n} sequences: {steps} steps, {1000 * wall / steps:.1f} ms a step (5 under the "
          f"profiler); forward {per['forward']:.1f}, postprocess {per['postprocess']:.1f}, "
          f"schedule {per['schedule']:.1f}")  # fmt: skip
    events = prof.key_averages()
    if device.startswith("cuda"):
        gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = sum(e.count for e in gpu) / 5
        busy = sum(e.self_device_time_total for e in gpu) / 5 / 1000
        print(f"kernels a step: {kernels:.0f}; GPU busy {busy:.2f} ms a step")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-weights", action="store_true", help="random weights from --model's config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="comma-separated")
    parser.add_argument("--concurrency", default="32", help="comma-separated")
    parser.add_argument("--rows", type=int, default=20, help="rows of the op table")
    args = parser.parse_args()
    path = random_model(args.model) if args.random_weights else args.model
    for dtype in args.dtype.split(","):
        for n in map(int, args.concurrency.split(",")):
            profile(path, args.device, dtype, n, args.rows)


if __name__ == "__main__":
    main()
