"""Hugging Face checkpoints -> GGUF for the llama.cpp engine, converted once into the cache.

A directory of an architecture written here (Llama-family and GPT-2) becomes an F16 GGUF (F32 for 1-D tensors and
norms, as llama.cpp's converter writes them); weights.plan() then lays it out for the CPU's fast kernels like any
GGUF. The facts come from llama.cpp's convert_hf_to_gguf.py (vendored by llama-cpp-python 0.3.36): tensor names
through the gguf package's maps, Llama's q/k rows permuted for llama.cpp's rope layout, GPT-2's Conv1D weights
transposed. Anything else raises UnsupportedModel, and `--engine auto` serves the directory on torch instead.
Needs `gguf` and `tokenizers` (slmserve's own dependencies); torch only for pytorch_model.bin checkpoints.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from slmserve.models.cache_files import cache_prefix, file_key, into_place
from slmserve.models.convert_vocab import UnsupportedModel, add_vocab

log = logging.getLogger(__name__)

__all__ = ["UnsupportedModel", "cache_path", "cached_gguf", "convert"]

# Bumped when what convert() writes changes, so older conversions in the cache are not reused.
RECIPE = 1
ARCHITECTURES = ("LlamaForCausalLM", "GPT2LMHeadModel")
# Files whose content the GGUF depends on besides the weights.
_INPUTS = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# Buffers transformers saves beside the weights; llama.cpp computes them itself.
_SKIP = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")
_NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def weight_files(model_dir: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (one or sharded), else pytorch_model*.bin."""
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise UnsupportedModel(f"no *.safetensors or pytorch_model*.bin in {model_dir}")
    return files


def cache_path(model_dir: Path, cache_dir: Path) -> Path:
    """Where the directory's conversion lives: named by its place, keyed by the content of its config, tokenizer and
    weight files (file_key: size, mtime, first and last MiB) and the recipe."""
    digest = hashlib.sha256(f"r{RECIPE}".encode())
    for path in [model_dir / name for name in _INPUTS] + weight_files(model_dir):
        if path.is_file():
            digest.update(f"{path.name}:{file_key(path)};".encode())
    return cache_dir / "hf-gguf" / f"{cache_prefix(model_dir)}{digest.hexdigest()[:16]}-r{RECIPE}.gguf"


def cached_gguf(model_dir: Path, cache_dir: Path) -> Path:
    """The directory as a GGUF, converted on first use and reused while its files stay the same.

    Raises UnsupportedModel when the architecture, tokenizer or a tensor is beyond the converter (or its packages
    are missing), OSError when the cache cannot be written.
    """
    check(_config(model_dir))
    out = cache_path(model_dir, cache_dir.expanduser())
    if out.is_file():
        return out
    start = time.perf_counter()
    log.info("converting %s to GGUF for llama.cpp (once; cached in %s)", model_dir, out.parent)
    with into_place(out) as tmp:
        convert(model_dir, tmp)
    log.info("converted %s in %.1f s", model_dir.name, time.perf_counter() - start)
    _prune(model_dir, out)
    return out


def _prune(model_dir: Path, current: Path) -> None:
    """Remove conversions of what the directory held before, with their requantized copies (each a whole model kept
    for good otherwise), and temporary files of conversions killed over an hour ago."""
    stale = []
    for old in current.parent.glob(f"{glob.escape(cache_prefix(model_dir))}*.gguf"):
        if old != current:
            stale += [
                old,
                *(current.parent.parent / "weights").glob(f"{glob.escape(cache_prefix(old))}*.gguf"),
            ]
    cutoff = time.time() - 3600  # a conversion in progress (another server starting) is seconds old
    for tmp in current.parent.glob(".tmp-*.gguf"):
        with contextlib.suppress(OSError):  # gone meanwhile: renamed into place by another server
            if tmp.stat().st_mtime < cutoff:
                stale.append(tmp)
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
            log.info("removed the stale conversion %s", path.name)


def _config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"config.json unreadable: {exc}") from exc


def _rope(config: dict) -> tuple[float, str]:
    """(rope theta, rope type) from transformers 5's rope_parameters or the older rope_theta / rope_scaling."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    return float(theta), params.get("rope_type", params.get("type", "default"))


def check(config: dict) -> None:
    """UnsupportedModel unless the config is one the converter writes faithfully."""
    arch = (config.get("architectures") or [None])[0]
    if arch is None:
        raise UnsupportedModel("config.json names no architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModel(f"{arch} is not converted for llama.cpp (converted: {', '.join(ARCHITECTURES)})")
    if config.get("quantization_config"):
        raise UnsupportedModel("quantized checkpoints are not converted")
    if arch == "LlamaForCausalLM":
        if config.get("hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"Llama with {config['hidden_act']} activations")
        if (kind := _rope(config)[1]) != "default":
            raise UnsupportedModel(f"Llama with {kind} rope scaling")
    else:
        if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise UnsupportedModel(f"GPT-2 with {config['activation_function']} (llama.cpp's GPT-2 uses tanh GELU)")
        if config.get("scale_attn_by_inverse_layer_idx") or not config.get("scale_attn_weights", True):
            raise UnsupportedModel("GPT-2 with attention scaled other than by 1/sqrt(head size)")


def convert(model_dir: Path, out: Path) -> None:
    """Write the checkpoint in `model_dir` to `out` as an F16 GGUF. Raises UnsupportedModel."""
    try:
        import gguf
        import tokenizers  # noqa: F401 -- checked here so a missing package reads as a reason, not a traceback
    except ImportError as exc:
        raise UnsupportedModel(f"converting needs the gguf and tokenizers packages ({exc})") from exc
    config = _config(model_dir)
    check(config)
    llama = config["architectures"][0] == "LlamaForCausalLM"
    arch = gguf.MODEL_ARCH.LLAMA if llama else gguf.MODEL_ARCH.GPT2
    n_layers = config["num_hidden_layers" if llama else "n_layer"]
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    (_llama_params if llama else _gpt2_params)(writer, config)
    add_vocab(writer, model_dir, config["vocab_size"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    tied = config.get("tie_word_embeddings", True)
    for name, data in _tensors(weight_files(model_dir)):
        if name.endswith(_SKIP) or (tied and name == "lm_head.weight"):
            continue  # tied: llama.cpp reuses token_embd as the output head when output.weight is absent
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UnsupportedModel(f"no llama.cpp tensor for {name}")
        data = _llama_tensor(name, data, config) if llama else _gpt2_tensor(name, data)
        # llama.cpp keeps 1-D tensors, norms and learned positions in F32; the matrices go to F16.
        wide = data.ndim <= 1 or new_name.endswith("_norm.weight") or new_name.startswith("position_embd")
        writer.add_tensor(new_name, data.astype(np.float32 if wide else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _llama_params(writer, config: dict) -> None:
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(_rope(config)[0])
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _gpt2_params(writer, config: dict) -> None:
    writer.add_context_length(config.get("n_positions") or config["n_ctx"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_block_count(config["n_layer"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-5))


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from transformers' rope layout (each head's first half, then second half, rotated
    together) to llama.cpp's (adjacent pairs rotated together): llama.cpp's LlamaModel.permute."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama_tensor(name: str, data: np.ndarray, config: dict) -> np.ndarray:
    heads = config["num_attention_heads"]
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_rope(data, heads)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_rope(data, config.get("num_key_value_heads") or heads)
    return data


def _gpt2_tensor(name: str, data: np.ndarray) -> np.ndarray:
    # GPT-2's Conv1D stores [in, out]; llama.cpp wants [out, in] like a Linear.
    if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        return np.ascontiguousarray(data.T)
    return data


def _tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float array) for every tensor in the weight files, one at a time."""
    for path in files:
        if path.suffix == ".safetensors":
            yield from read_safetensors(path)
        else:
            yield from _read_torch_bin(path)


def read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of a safetensors file, read from a memory map. Read directly (the format is an 8-byte header
    length, a JSON header, then raw little-endian data) because safetensors' numpy API cannot return bf16 tensors,
    the usual dtype of published checkpoints; bf16 is widened to f32 exactly."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw, dtype = data[begin:end], info["dtype"]
        if dtype == "BF16":  # the top half of an f32
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _NP_DTYPES:
            array = raw.view(np.dtype(_NP_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise UnsupportedModel(f"{name} is {dtype}; only float checkpoints are converted")
        yield name, array.reshape(info["shape"])


def _read_torch_bin(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    if importlib.util.find_spec("torch") is None:
        raise UnsupportedModel(f"{path.name} is a pickled torch checkpoint and torch is not installed")
    import torch

    for name, tensor in torch.load(path, map_location="cpu", weights_only=True).items():
        yield name, tensor.float().numpy()
