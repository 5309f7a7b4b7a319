"""Hugging Face models for the torch engine: local directories, hub ids, and GGUF files dequantized once.

Needs the optional extra slmserve[torch] (torch, transformers, peft); nothing on the llama.cpp path imports it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slmserve.engine.engine import Engine
from slmserve.engine.loader import LoadedModel, load_adapters
from slmserve.engine.runner_torch import TorchRunner
from slmserve.models.chat_template import HFChatTemplate
from slmserve.models.hf_tokenizer import HFTokenizer
from slmserve.models.registry import ModelSource
from slmserve.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} asked for, but torch sees no CUDA device")
    return device


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":  # bf16/fp16 matmuls are far slower than fp32 on CPUs without AMX
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[setting]


def converted_gguf(gguf: Path, cache_dir: Path) -> Path:
    """A Hugging Face directory holding the GGUF's weights dequantized, made on first use (~25 s) and reused.

    The cache key is the file's name, size and modification time, so a replaced file is converted again.
    """
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / "converted" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s for the torch engine (once; cached in %s)", gguf.name, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"transformers could not read {gguf.name}: {exc}") from exc
    if getattr(model, "hf_quantizer", None) is not None:  # the weights are plain now; save them as such
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place, so a crash never leaves half a model in the cache.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_location(source: ModelSource, cache_dir: str) -> str:
    """What transformers' from_pretrained takes for this model: a directory or a hub id; a GGUF is converted."""
    if source.format == "gguf":
        return str(converted_gguf(source.path, Path(cache_dir).expanduser()))
    return str(source.path) if source.path is not None else source.hub_id


def load(settings: Settings, source: ModelSource) -> LoadedModel:
    """Load a model for the torch engine, on a thread of its own that ends when the load does.

    Each thread that runs a parallel torch op keeps an OpenMP team of worker threads for as long as it lives.
    Loading on the caller's thread (the server's main thread or an executor thread, both long-lived) left one
    such team beside the engine thread's, and a step at 32 sequences on 2 cores took 128-137 ms instead of
    117-121. Likely why, as libgomp documents: with more OpenMP threads than cores it spins only briefly
    between parallel regions, so each parallel op waits for its worker to wake.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="slmserve-load") as pool:
        return pool.submit(_load, settings, source).result()


def _load(settings: Settings, source: ModelSource) -> LoadedModel:
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    if device.type == "cpu":
        torch.set_num_threads(settings.n_threads)
    # A torch step is ~1000 Python-level op calls, each taking the GIL back from the HTTP thread; the default 5 ms
    # switch interval can stall the engine that long each time. 0.5 ms: 212 vs 197 tok/s at 32 concurrent over
    # HTTP (mean of 4 alternating runs, 2 cores); llama.cpp's step is one C call and does not care.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    where = model_location(source, settings.cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype).to(device)
    except OSError as exc:  # not on disk and not downloadable (offline, private, misspelt)
        raise FileNotFoundError(f"could not load the Hugging Face model {where!r}: {exc}") from exc
    config = model.config
    trained = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
    slot_len = min(-(-settings.kv_cells("torch") // settings.max_running), trained)
    max_model_len = min(slot_len, settings.max_model_len or slot_len)
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    hf_tok = HFTokenizer(tokenizer, eos_ids, vocab_size=model.get_output_embeddings().out_features)
    runner = TorchRunner(model, hf_tok, n_slots=settings.max_running, slot_len=slot_len, device=str(device))
    load_adapters(runner, settings.lora)
    engine = Engine(
        runner,
        max_running=settings.max_running,
        max_waiting=settings.max_waiting,
        token_budget=settings.step_token_budget,
        kv_capacity=settings.max_running * slot_len,
    )
    template = HFChatTemplate(tokenizer)
    log.info(
        "torch %s %s, %d slots of %d tokens", device, str(dtype).removeprefix("torch."), settings.max_running, slot_len
    )
    return LoadedModel(
        settings.model_name,
        source.path,
        engine,
        runner,
        hf_tok,
        template,
        max_model_len,
        backend="torch",
        device=str(device),
        adapters=runner.adapters,
    )
