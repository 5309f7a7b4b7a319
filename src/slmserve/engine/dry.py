"""DRY ("don't repeat yourself"), llama.cpp's sampler: penalize the token that would extend a verbatim repeat.

For each earlier place in the context that ends with the same tokens as the context does now (the longest such
match n, counted back from the end but never across a sequence breaker), the token that followed it there is
penalized by multiplier * base ** (n - allowed_length), once n >= allowed_length. Semantics are llama.cpp's
(src/llama-sampler.cpp, llama_sampler_dry_apply, after koboldcpp's): the prompt counts, same breaker matching,
same Z-algorithm results, same exponent clamp; -1 for the window is the whole context, as llama.cpp's server had
it (the llama.cpp pinned here takes 0 and up only, default 64). Backend-free: both engines' logits come through
sampling.sample().
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from slmserve.engine.sampling import SamplingParams

DEFAULT_BREAKERS = ("\n", ":", '"', "*")
MAX_BREAKERS = 32
MAX_BREAKER_BYTES = 40  # llama.cpp's MAX_CHAR_LEN (it truncates longer ones; we refuse them)
_MAX_TAIL = 20  # llama.cpp's MAX_SEQ_LEN: tokens of a breaker's tail kept after its head token
_FLOAT_MAX_LOG = 88.7228391  # ln(FLT_MAX): llama.cpp clamps the exponent so base ** exp stays a float32
_F32 = np.finfo(np.float32)


@dataclass(frozen=True)
class Breakers:
    """A list of sequence breakers compiled against one vocabulary, as llama.cpp's dry_processed_breakers.

    heads maps a token to the token sequences (tails) that, following it, complete a breaker; an empty tail means
    the token's own text holds a whole breaker (`single`, which DRY also never penalizes).
    """

    heads: dict[int, tuple[tuple[int, ...], ...]]
    single: frozenset[int]


class _VocabText:
    """Every token's bytes in one array with offsets, so a breaker is looked for in all 49k tokens at once."""

    def __init__(self, tokenizer) -> None:
        texts = [tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]
        self.lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        self.ends = np.cumsum(self.lengths)
        self.blob = np.frombuffer(b"".join(texts) + b"\0", dtype=np.uint8)  # one pad byte: no empty array

    def containing(self, b: bytes) -> np.ndarray:
        """Ids of the tokens whose text holds b."""
        n = len(self.blob) - 1
        pos = np.flatnonzero(self.blob[: max(n - len(b) + 1, 0)] == b[0])
        for j in range(1, len(b)):
            pos = pos[self.blob[pos + j] == b[j]]
        tok = np.searchsorted(self.ends, pos, side="right")  # the token each match starts in
        return np.unique(tok[pos + len(b) <= self.ends[tok]])

    def ending_with(self, b: bytes) -> np.ndarray:
        """Ids of the tokens whose text ends with b."""
        ok = self.lengths >= len(b)
        at = np.maximum(self.ends - len(b), 0)
        for j, byte in enumerate(b):
            ok &= self.blob[np.minimum(at + j, len(self.blob) - 1)] == byte
        return np.flatnonzero(ok)


_lock = threading.Lock()
_vocabs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> (_VocabText, {list: Breakers})
_LISTS_KEPT = 64  # distinct breaker lists kept compiled per tokenizer


def breakers_for(tokenizer, params: SamplingParams) -> Breakers | None:
    """The request's breakers compiled for this tokenizer; None when DRY is off. Cached per tokenizer and list:
    the first use scans the vocabulary (~0.1 s for 49k tokens), a list compiles in ~1 ms a breaker."""
    if not params.dry_on:
        return None
    key = tuple(params.dry_sequence_breakers)
    with _lock:  # several engines (one per model) add requests from their own threads
        if tokenizer not in _vocabs:
            _vocabs[tokenizer] = (_VocabText(tokenizer), OrderedDict())
        vocab, lists = _vocabs[tokenizer]
        if key not in lists:
            lists[key] = _compile(tokenizer, vocab, key)
            if len(lists) > _LISTS_KEPT:
                lists.popitem(last=False)
        lists.move_to_end(key)
        return lists[key]


def _compile(tokenizer, vocab: _VocabText, breakers: tuple[str, ...]) -> Breakers:
    """llama.cpp's get_overlapping_token_sequences: a token holding a breaker is a breaker by itself; a token ending
    with the breaker's first L bytes heads the tokens of the rest."""
    heads: dict[int, set[tuple[int, ...]]] = {}
    for text in breakers:
        b = text.encode("utf-8")
        whole = vocab.containing(b)
        for t in whole.tolist():
            heads.setdefault(t, set()).add(())
        for cut in range(1, len(b)):
            try:
                rest = b[cut:].decode("utf-8")
            except UnicodeDecodeError:  # a cut inside a character: its tail cannot be tokenized as text
                continue
            ids = np.setdiff1d(vocab.ending_with(b[:cut]), whole, assume_unique=True)
            if not len(ids):
                continue
            tail = tuple(tokenizer.encode(rest, add_special=False, special=False)[:_MAX_TAIL])
            for t in ids.tolist():
                heads.setdefault(t, set()).add(tail)
    single = frozenset(t for t, tails in heads.items() if () in tails)
    return Breakers({t: tuple(tails) for t, tails in heads.items()}, single)


def _window(params: SamplingParams, prompt_ids: list[int], output_ids: list[int]) -> list[int]:
    """The last dry_penalty_last_n tokens of prompt + output (-1: all), newest first; of the output alone with
    dry_answer_only (the loop guard's DRY: an answer may copy the prompt, e.g. an email address to extract)."""
    if params.dry_answer_only:
        prompt_ids = []
    total = len(prompt_ids) + len(output_ids)
    n = total if params.dry_penalty_last_n == -1 else min(total, params.dry_penalty_last_n)
    if n <= len(output_ids):
        return output_ids[len(output_ids) - n :][::-1]
    return output_ids[::-1] + prompt_ids[total - n :][::-1]


def _repeat_limit(r: list[int], breakers: Breakers | None) -> int:
    """How far back a repeat may reach: the tokens since the newest complete breaker (llama.cpp's step 1)."""
    if breakers is None:
        return len(r)
    heads = breakers.heads
    if heads.keys().isdisjoint(r):  # no breaker in the window: a C-speed answer to the slowest case
        return len(r)
    for i, token in enumerate(r):
        tails = heads.get(token)
        if tails is None:
            continue
        longest = -1
        for tail in tails:  # the longest that fits and matches wins
            if longest < len(tail) <= i and all(tail[o] == r[i - o - 1] for o in range(len(tail))):
                longest = len(tail)
        if longest >= 0:
            return i - longest
    return len(r)


def _repeat_lengths(r: list[int], limit: int) -> dict[int, int]:
    """For each shift k with r[k] == r[0]: how many tokens from r[k] on equal those from r[0] on, capped at limit.

    llama.cpp's reverse Z-algorithm, visiting only the shifts that start with the newest token: at any other the
    length is 0 and the Z-box is left as it was, so the values are the same and the work is O(matches + limit
    steps per box) instead of a Python step per token.
    """
    n, first = len(r), r[0]
    z: dict[int, int] = {}
    lt = rt = 0
    k = 0
    while True:
        try:
            k = r.index(first, k + 1)
        except ValueError:
            return z
        if k <= rt and z[k - lt] < rt - k + 1:  # inside the box, and its mirror ends inside it too
            z[k] = z[k - lt]
            continue
        m = rt - k + 1 if k <= rt else 0  # the box already vouches for r[k : rt + 1]
        m = _common(r, k, m, min(limit, n - k))
        z[k] = min(m, limit)
        if m:
            lt, rt = k, k + m - 1


def _common(r: list[int], k: int, m: int, stop: int) -> int:
    """m grown while r[m] == r[k + m], up to stop: slices compared in growing chunks (C speed, for long repeats),
    the chunk that differs token by token."""
    step = 8
    while m < stop:
        end = min(m + step, stop)
        if r[m:end] == r[k + m : k + end]:
            m, step = end, step * 2
        elif step > 8:
            step = 8
        else:
            while r[m] == r[k + m]:  # stops inside this chunk: it differs
                m += 1
            return m
    return m


def apply_dry(
    logits: np.ndarray, params: SamplingParams, prompt_ids: list[int], output_ids: list[int], breakers: Breakers | None
) -> None:
    """Subtract DRY's penalty from logits [V] in place (float32, a copy the sampler owns)."""
    allowed = params.dry_allowed_length
    r = _window(params, prompt_ids, output_ids)
    if len(r) <= allowed:
        return
    limit = _repeat_limit(r, breakers)
    if limit < allowed:
        return
    # The token after each earlier occurrence, with the longest repeat it would extend (step 3).
    longest: dict[int, int] = dict.fromkeys(r[: len(r) - 1], 0) if allowed == 0 else {}
    for k, length in _repeat_lengths(r, limit).items():
        if length >= allowed and length > longest.get(r[k - 1], -1):
            longest[r[k - 1]] = length
    single = breakers.single if breakers is not None else frozenset()
    pairs = [(t, length) for t, length in longest.items() if t not in single]
    if not pairs:
        return
    tokens = np.fromiter((t for t, _ in pairs), dtype=np.int64, count=len(pairs))
    exps = np.fromiter((length for _, length in pairs), dtype=np.float64, count=len(pairs)) - allowed
    live = np.isfinite(logits[tokens])  # a token a grammar ruled out (-inf) stays out: no clipping it back in
    tokens, exps = tokens[live], exps[live]
    if params.dry_base > 1.000001:
        cap = int(_FLOAT_MAX_LOG / math.log(params.dry_base))
        if cap > 0:
            exps = np.minimum(exps, cap)
    with np.errstate(over="ignore"):  # a huge base still overflows, as in llama.cpp: kept finite below
        penalty = params.dry_multiplier * np.power(params.dry_base, exps)
    logits[tokens] = np.maximum(logits[tokens] - penalty, _F32.min)
