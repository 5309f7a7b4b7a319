"""A peft LoRA adapter as llama.cpp takes it: a GGUF LoRA, converted once into the cache.

The layout is llama.cpp's (`convert_lora_to_gguf.py`): for each adapted weight `blk.N.attn_q.weight` of the base
GGUF, `...weight.lora_a` [r, in] (Q8_0) and `...weight.lora_b` [out, r] (F32) in torch order. Llama's converter
permutes the rows of q and k for llama.cpp's rope layout, so the rows of their B matrices are permuted alike.
peft's scale (alpha / r, alpha / sqrt(r) under rsLoRA, per-module patterns) is folded into B and the file's alpha
is 0, which llama.cpp reads as "scale 1": one rule for every peft option.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from slmserve.models.cache_files import file_key, into_place
from slmserve.models.convert_hf import permute_rope

# Bumped when the way a file is made changes, so old cache files are not reused.
_RECIPE = 2
_ARCHS = ("llama", "gpt2")  # the base architectures whose tensor layout this conversion knows
_LORA_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def adapter_gguf(adapter_dir: Path, base: Path, cache_dir: Path) -> Path:
    """The GGUF LoRA of the peft adapter in adapter_dir for the base GGUF file `base`, made once into
    cache_dir/lora (atomic; keyed by the adapter's files, the base file and the recipe). Raises ValueError when the
    directory is not a LoRA adapter of that base model."""
    adapter_dir = adapter_dir.expanduser()
    if not is_adapter_dir(adapter_dir):
        raise ValueError(f"no adapter_config.json in {adapter_dir}: not a peft adapter directory")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"no adapter_model.safetensors in {adapter_dir} (peft's save_pretrained writes it)")
    digest = hashlib.sha256(f"r{_RECIPE}:{file_key(base)}".encode())
    for part in (adapter_dir / "adapter_config.json", weights):
        digest.update(part.read_bytes())
    out = cache_dir.expanduser() / "lora" / f"{adapter_dir.name}-{digest.hexdigest()[:16]}.gguf"
    if out.is_file():
        return out
    with into_place(out) as tmp:
        write_lora_gguf(adapter_dir, base, tmp)
    return out


def write_lora_gguf(adapter_dir: Path, base: Path, out: Path) -> None:
    """Write the GGUF LoRA of the peft adapter in adapter_dir, for the base GGUF `base`, to out."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir} holds a {config.get('peft_type')} adapter; only LoRA is served")
    reader = gguf.GGUFReader(base)
    fields = reader.fields

    def meta(key: str):
        return fields[key].contents()

    arch = meta("general.architecture")
    if arch not in _ARCHS:
        raise ValueError(f"LoRA adapters are converted for {' and '.join(_ARCHS)} models; the base model is {arch}")
    names = gguf.get_tensor_name_map(_arch_enum(gguf, arch), meta(f"{arch}.block_count"))
    base_shapes = {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}
    heads = (meta(f"{arch}.attention.head_count"), _kv_heads(fields, arch, meta))

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"{adapter_dir}: {key!r} is not a LoRA A or B matrix (modules_to_save is not served)")
        pairs.setdefault(match["module"], {})[match["ab"]] = tensor.astype(np.float32)

    Q8_0 = gguf.GGMLQuantizationType.Q8_0
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # the scale is in B
    for module, ab in sorted(pairs.items()):
        name = names.get_name(module.removeprefix("transformer.") + ".weight", try_suffixes=(".weight",))
        if name is None or name not in base_shapes or set(ab) != {"A", "B"}:
            raise ValueError(f"{adapter_dir}: the module {module!r} is not a weight of the base model")
        a, b = ab["A"], ab["B"] * _scale(config, module, ab["A"].shape[0])
        if base_shapes[name] != (b.shape[0], a.shape[1]):
            raise ValueError(f"{adapter_dir}: {module} is {b.shape[0]}x{a.shape[1]}, the base model's is "
                             f"{base_shapes[name][0]}x{base_shapes[name][1]}: an adapter of another model")  # fmt: skip
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            b = permute_rope(b, heads[0] if "attn_q" in name else heads[1])
        a, b = _batch_invariant(a, b)
        if a.shape[1] % 32 == 0:
            writer.add_tensor(f"{name}.lora_a", gguf.quants.quantize(a, Q8_0), raw_dtype=Q8_0)
        else:
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _batch_invariant(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A and B padded to an odd rank with a zero row and column (the product is unchanged), so that a token's
    answer does not depend on the tokens decoded beside it.

    ggml multiplies F32 matrices with llamafile's sgemm when a step has two or more tokens and the inner dimension
    is a multiple of its vector width (8 on AVX2, 16 on AVX-512), and with a dot product per row otherwise; the two
    sum in different orders. B's inner dimension is the rank: odd, it takes the row path at every batch size. A
    (inner dimension the model's width) is Q8_0, whose two paths sum alike, as the base weights' do.
    """
    if a.shape[0] % 2:
        return a, b
    return np.pad(a, ((0, 1), (0, 0))), np.pad(b, ((0, 0), (0, 1)))


def _scale(config: dict, module: str, rank: int) -> float:
    """peft's scale for one module: its alpha over its rank (over sqrt(rank) under rsLoRA)."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = value
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _kv_heads(fields, arch: str, meta) -> int:
    key = f"{arch}.attention.head_count_kv"
    return meta(key) if key in fields else meta(f"{arch}.attention.head_count")


def _arch_enum(gguf, arch: str):
    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
