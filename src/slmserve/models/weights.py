"""Which weight layout the llama.cpp engine runs, and the requantized copies it keeps in the cache.

llama.cpp's fast batched kernels (llamafile's sgemm and the CPU repack) take only some tensor types: on AVX2,
F32, F16, Q8_0, Q4_0, Q5_0, IQ4_NL and Q4_K. A file in another type (the bundled SmolLM2 is Q4_1) runs every
matrix product one row at a time. `auto` looks at the file's 2-D tensors and the CPU's features and, where the
weights miss the fast kernels, requantizes the file once (~0.5 s for SmolLM2-135M) into the cache directory.
Measurements behind the choice of target are in docs/PERFORMANCE.md ("Weight layout").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from slmserve.models.cache_files import cache_prefix, file_key, into_place

log = logging.getLogger(__name__)

# The fast kernels' tensor types by CPU family (ggml's llamafile sgemm and CPU repack, llama.cpp as vendored
# by llama-cpp-python 0.3.36). A CPU with neither feature keeps the original file under `auto`.
_FAST = {
    "AVX2": frozenset({"f32", "f16", "q8_0", "q4_0", "q5_0", "iq4_nl", "q4_K"}),
    "NEON": frozenset({"f32", "f16", "q8_0", "q4_0", "iq4_nl"}),
}
# Bits per weight of the types auto may meet; a source of fewer than 5.5 bits goes to q4_0, a finer one to q8_0
# so that requantizing never throws away much more than the file already had.
_BITS = {
    "f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q6_K": 6.56, "q5_1": 6, "q5_0": 5.5, "q5_K": 5.5,
    "q4_1": 5, "q4_0": 4.5, "q4_K": 4.5, "iq4_nl": 4.5, "iq4_xs": 4.25, "q3_K": 3.44, "q2_K": 2.63,
}  # fmt: skip
# A file whose weights mostly run on the fast kernels stays as it is: Gemma 3 270M's Q4_K_M file has 4% q6_K, and
# requantizing it all to q8_0 enlarged its q5_0 and q4_K layers for no gain (0.87-1.00x at 8 users, noisy).
_KEEP_BELOW = 0.1
# Target -> its LLAMA_FTYPE_MOSTLY_*.
_TARGETS = {"q4_0": "Q4_0", "q5_0": "Q5_0", "q8_0": "Q8_0", "iq4_nl": "IQ4_NL", "f16": "F16"}  # q5_0: scripts only
# Bumped when the way a target is made changes, so old cache files are not reused.
_RECIPE = 1


def head_type(target: str, family: str | None) -> str:
    """The type the target gives the token embeddings and the output (LM head), which SmolLM2 ties together.

    Left to llama.cpp, that tensor becomes Q6_K, which the fast kernels skip, and the LM head (a fifth of the
    weights, the largest matrix) would again run one row at a time. q4_0 takes Q5_0 where the CPU's fast kernels
    do: 11 MB fewer to read a token than Q8_0, 1.06-1.09x the throughput at 8 and 32 users, the same QA score
    (docs/PERFORMANCE.md, "Weight layout"); a Q4_0 head scored under the original. iq4_nl, the layout for
    closeness to the original, keeps Q8_0 (with Q5_0 it measured further from the original).
    """
    if target in ("q8_0", "f16"):
        return target
    return "q5_0" if target == "q4_0" and family is not None and "q5_0" in _FAST[family] else "q8_0"


class WeightsError(RuntimeError):
    """A requantized copy could not be made."""


@dataclass(frozen=True)
class WeightsPlan:
    """What to load: the file, its layout, and why."""

    path: Path
    layout: str  # the weights' main type as run, e.g. "q4_0"
    source_type: str  # the original file's main type, e.g. "q4_1"
    requantized: bool
    reason: str
    head: str | None = None  # a requantized copy's token embeddings / LM head type, e.g. "q5_0"

    @property
    def description(self) -> str:
        if not self.requantized:
            return self.source_type
        head = f", head {self.head}" if self.head and self.head != self.layout else ""
        return f"{self.layout}{head} (requantized from {self.source_type})"


def main_type(types: Counter[str]) -> str:
    """The type most of the weights have, e.g. "q4_1"."""
    return types.most_common(1)[0][0] if types else "unknown"


def tensor_types(path: Path) -> Counter[str]:
    """ggml type name -> number of weights of that type in the file. ValueError if it is not a GGUF file."""
    ggml = _gguf_api()
    ctx = ggml.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
    if not ctx:
        raise ValueError(f"{path} is not a GGUF file ggml can read")
    counts: Counter[str] = Counter()
    try:
        for i in range(ggml.gguf_get_n_tensors(ctx)):
            kind = ggml.gguf_get_tensor_type(ctx, i)
            blocks = ggml.gguf_get_tensor_size(ctx, i) // ggml.ggml_type_size(kind)
            counts[ggml.ggml_type_name(kind).decode()] += blocks * ggml.ggml_blck_size(kind)
    finally:
        ggml.gguf_free(ctx)
    return counts


def cpu_family(system_info: str) -> str | None:
    """'AVX2' or 'NEON' from llama.cpp's system info ("... AVX2 = 1 | ..."), else None."""
    # "CPU : SSE3 = 1 | AVX2 = 1 | ...": the first flag follows the backend's name
    flags = {p.split("=")[0].split(":")[-1].strip() for p in system_info.split("|") if p.strip().endswith("= 1")}
    return next((family for family in _FAST if family in flags), None)


def auto_target(types: Counter[str], family: str | None) -> tuple[str | None, str]:
    """(the layout auto requantizes to, or None to keep the file; the reason in words)."""
    if not types:
        return None, "the file lists no tensors"
    main = main_type(types)
    if family is None:
        return None, "no fast kernels known for this CPU"
    slow = sum(n for t, n in types.items() if t not in _FAST[family])
    if not slow:
        return None, f"{main} runs on {family}'s fast kernels"
    share = slow / sum(types.values())
    if share < _KEEP_BELOW:
        return None, f"only {share:.0%} of the weights miss {family}'s fast kernels: requantizing would not pay"
    # Q4_0, not IQ4_NL, though IQ4_NL keeps the original's JSON (Q4_0 closed 17 of 48 objects, the original 37,
    # IQ4_NL 36): on AVX2 IQ4_NL's batched and one-row kernels round differently, so a greedy answer changed with
    # the requests beside it (1 of 8 the same, Q4_0 8 of 8), and it takes 15 s to make (docs/PERFORMANCE.md).
    target = "q4_0" if _BITS.get(main, 16) < 5.5 else "q8_0"
    return target, f"{share:.0%} of the weights ({main}) miss {family}'s fast kernels"


def _version() -> str:
    import llama_cpp

    return f"{llama_cpp.__version__}-r{_RECIPE}"


def cache_path(path: Path, target: str, head: str, cache_dir: Path) -> Path:
    """Where the `target` copy of `path` lives: keyed by the file's place and content, the target and its head's
    type, the recipe and llama.cpp."""
    return cache_dir / "weights" / f"{cache_prefix(path)}{file_key(path)}-{target}-head_{head}-{_version()}.gguf"


def prune(path: Path, cache_dir: Path) -> list[Path]:
    """Remove the cached copies of what the file at `path` held before (reinstalled or rewritten, it has another
    key; each such copy would keep ~90 MB for good, one per reinstall), copies from another llama.cpp or recipe, and
    temporary files of builds killed over an hour ago. Copies of other files, and the current content's other
    layouts, stay. Returns what it removed; a file it cannot remove is left."""
    weights_dir = cache_dir / "weights"
    current = cache_prefix(path)
    keep = f"{current}{file_key(path)}-"
    stale = [
        copy
        for copy in weights_dir.glob(f"{glob.escape(current)}*.gguf")
        if not (copy.name.startswith(keep) and copy.name.endswith(f"-{_version()}.gguf"))
    ]
    cutoff = time.time() - 3600  # a build in progress (another server starting) is seconds old
    for tmp in weights_dir.glob(".tmp-*.gguf"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                stale.append(tmp)
    removed = []
    for old in stale:
        with contextlib.suppress(OSError):
            old.unlink()
            removed.append(old)
    return removed


def plan(path: Path, wanted: str, cache_dir: Path) -> WeightsPlan:
    """Decide what to load for `--weights wanted`; requantize into cache_dir when needed (and not cached).

    Never raises for the cache: an unwritable cache or a failed requantization falls back to the original file
    with a warning.
    """
    try:
        types = tensor_types(path)
    except (OSError, ValueError) as exc:  # llama.cpp's load then says what is wrong with the file
        return WeightsPlan(path, "unknown", "unknown", False, f"tensor types unreadable: {exc}")
    source_type = main_type(types)
    keep = WeightsPlan(path, source_type, source_type, False, "--weights original")
    if wanted == "original":
        return keep
    family = cpu_family(_system_info())
    if wanted == "auto":
        target, reason = auto_target(types, family)
        if target is None:
            return replace(keep, reason=reason)
    else:
        target, reason = wanted, f"--weights {wanted}"
        if source_type == target:
            return replace(keep, reason=f"{reason}: the file is already {source_type}")
    head = head_type(target, family)
    cache_dir = cache_dir.expanduser()
    try:
        out = cache_path(path, target, head, cache_dir)
        if not out.is_file():
            requantize(path, out, target, head)
            if stale := prune(path, cache_dir):
                log.info("removed %d stale cached copies of %s: %s", len(stale), path.name, [p.name for p in stale])
    except (OSError, WeightsError) as exc:
        log.warning("running %s's original %s weights, slower: %s", path.name, source_type, exc)
        return replace(keep, reason=f"{reason}, but requantizing failed: {exc}")
    return WeightsPlan(out, target, source_type, True, reason, head)


def discard(weights: WeightsPlan) -> None:
    """Remove a cached copy that failed to load, so the next plan() makes it again."""
    if weights.requantized:
        weights.path.unlink(missing_ok=True)


def requantize(src: Path, out: Path, target: str, head: str | None = None) -> None:
    """Write src requantized to target at out, through a temporary file renamed into place. `head`: the type of
    the token embeddings and output, head_type()'s for this CPU unless given."""
    import llama_cpp as C

    ftype = _TARGETS[target]
    head = head or head_type(target, cpu_family(_system_info()))
    with into_place(out) as tmp:
        params = C.llama_model_quantize_default_params()
        params.ftype = getattr(C, f"LLAMA_FTYPE_MOSTLY_{ftype}")
        params.allow_requantize = True
        params.token_embedding_type = params.output_tensor_type = getattr(C, f"GGML_TYPE_{head.upper()}")
        params.nthread = os.cpu_count() or 1
        log.info("requantizing %s to %s, head %s (once; cached in %s)", src.name, target, head, out.parent)
        start = time.perf_counter()
        if C.llama_model_quantize(str(src).encode(), str(tmp).encode(), params) != 0:
            raise WeightsError(f"llama.cpp could not requantize {src.name} to {target}")
        log.info("requantized %s to %s in %.1f s", src.name, target, time.perf_counter() - start)


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _gguf_api() -> ctypes.CDLL:
    """ggml's own GGUF reader (C, in the libggml that llama-cpp-python ships): the header alone, in milliseconds.
    The gguf package's GGUFReader takes ~4 s on SmolLM2, most of it turning the vocabulary into Python objects."""
    from llama_cpp._ggml import libggml as lib

    ctx, i64, kind = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name, restype, argtypes in [
        ("gguf_init_from_file", ctx, [ctypes.c_char_p, _GGUFInitParams]),
        ("gguf_get_n_tensors", i64, [ctx]),
        ("gguf_get_tensor_type", kind, [ctx, i64]),
        ("gguf_get_tensor_size", ctypes.c_size_t, [ctx, i64]),
        ("gguf_free", None, [ctx]),
        ("ggml_type_name", ctypes.c_char_p, [kind]),
        ("ggml_type_size", ctypes.c_size_t, [kind]),
        ("ggml_blck_size", i64, [kind]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _system_info() -> str:
    import llama_cpp as C

    return C.llama_print_system_info().decode(errors="replace")


def describe(path: Path, cache_dir: Path) -> str:
    """One line for `slmserve models`: the file's layout and what auto runs here, without requantizing."""
    types = tensor_types(path)
    family = cpu_family(_system_info())
    target, reason = auto_target(types, family)
    if target is None:
        return f"{main_type(types)}; auto runs it as it is ({reason})"
    head = head_type(target, family)
    cached = cache_path(path, target, head, cache_dir.expanduser())
    where = f"cached at {cached}" if cached.is_file() else f"made on first start into {cached.parent}"
    return f"{main_type(types)}; auto runs {target}, head {head} ({reason}), {where}"
