"""Sampling parameters and the sampler: one vocabulary row of logits in, one token out.

Backend-free on purpose (numpy only): the llama.cpp and PyTorch runners both hand their logits here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from slmserve.engine.dry import DEFAULT_BREAKERS, MAX_BREAKER_BYTES, MAX_BREAKERS, Breakers, apply_dry

# With top_p < 1, the nucleus is first looked for among this many best tokens (then 8x as many while they hold
# less than top_p of the mass). Sorting all 49k-262k logits for every sequence would cost more than the decode.
_NUCLEUS_CANDIDATES = 1024

# Temperatures below this sample as argmax (vLLM's _SAMPLING_EPS): nothing is left to draw from.
GREEDY_BELOW = 1e-5
_F32 = np.finfo(np.float32)

# The SamplingParams fields a server setting of the same name gives a default (Serving.build_params).
DRY_FIELDS = ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers")


@dataclass
class SamplingParams:
    """How one request chooses its tokens. Raises ValueError on values no model can honour."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: no top-k
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k: the chosen token's logprob and the k most likely
    grammar: str | None = None  # an llguidance grammar (engine/structured.py) the output must match
    # With a grammar (engine/loop_guard.py): repeats taken back, and an answer that runs into max_tokens closed.
    loop_guard: bool = True
    budget_close: bool = True
    answered_calls: list[str] = field(default_factory=list)  # tool calls already answered (loop_guard.call_key)
    # DRY (engine/dry.py), llama.cpp's names and defaults: multiplier 0 is off.
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1  # -1: the whole context (prompt and output); 0: off
    dry_sequence_breakers: list[str] = field(default_factory=lambda: list(DEFAULT_BREAKERS))
    dry_answer_only: bool = False  # DRY looks back over the output alone, not the prompt (the loop guard's DRY)

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= -1, "top_k must be -1, 0 (off) or positive"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (all(s for s in self.stop), "stop strings must not be empty"),
            *self._dry_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _dry_checks(self) -> list[tuple[bool, str]]:
        """llama.cpp's rules, stricter where it would quietly do something else: a negative multiplier (it would
        reward repeats) and a base below 1 (its server swaps in 1.75) are refused, as is a breaker it would cut."""
        breakers = self.dry_sequence_breakers
        return [
            (math.isfinite(self.dry_multiplier) and self.dry_multiplier >= 0, "dry_multiplier must be >= 0 (0: off)"),
            (math.isfinite(self.dry_base) and self.dry_base >= 1, "dry_base must be >= 1"),
            (self.dry_allowed_length >= 0, "dry_allowed_length must be >= 0"),
            (self.dry_penalty_last_n >= -1, "dry_penalty_last_n must be >= -1 (-1: the whole context, 0: off)"),
            (len(breakers) <= MAX_BREAKERS, f"dry_sequence_breakers may hold at most {MAX_BREAKERS} strings"),
            (
                all(isinstance(b, str) and 0 < len(b.encode("utf-8")) <= MAX_BREAKER_BYTES for b in breakers),
                f"each of dry_sequence_breakers must be a non-empty string of at most {MAX_BREAKER_BYTES} bytes",
            ),
        ]

    @property
    def dry_on(self) -> bool:
        """DRY changes logits: a positive multiplier and a window (llama.cpp's test, base >= 1 being checked)."""
        return self.dry_multiplier > 0 and self.dry_penalty_last_n != 0

    @property
    def greedy(self) -> bool:
        """Argmax: temperature 0, or one so small that dividing by it overflows (vLLM's _SAMPLING_EPS too)."""
        return self.temperature < GREEDY_BELOW

    @property
    def needs_history(self) -> bool:
        """True when the sampler must see the tokens generated so far."""
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0 or self.dry_on


@dataclass
class TokenLogprobs:
    """The chosen token's log-probability and the most likely alternatives, from the model's own distribution."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


def make_rng(seed: int | None) -> np.random.Generator:
    """A per-request generator: a fixed seed gives the same draws whatever else the engine is doing. Any integer
    seeds it (OpenAI's API takes negative ones; numpy takes them as their two's complement, 64 bits)."""
    return np.random.default_rng(None if seed is None else seed & (2**64 - 1))


def apply_penalties(
    logits: np.ndarray, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]
) -> np.ndarray:
    """Logit bias, HF-style repetition penalty (prompt + output) and OpenAI presence/frequency (output)."""
    if params.logit_bias:
        ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64)
        logits[ids] += np.fromiter(params.logit_bias.values(), dtype=np.float32)
    if params.repetition_penalty != 1:
        seen = np.unique(np.asarray(prompt_ids + output_ids, dtype=np.int64))
        picked = logits[seen]
        with np.errstate(over="ignore", divide="ignore"):  # a tiny penalty overflows: clipped to finite below
            penalized = np.where(picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty)
        logits[seen] = np.clip(penalized, _F32.min, _F32.max)
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        ids, counts = np.unique(np.asarray(output_ids, dtype=np.int64), return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
    return logits


def _weights(logits: np.ndarray, temperature: float) -> np.ndarray:
    """exp((logits - max) / temperature) [n] float32, the largest 1: the distribution, unnormalised.

    The max comes off first, so no logit over a tiny temperature overflows to inf (a penalty may have pushed one
    to float32's limits: the difference then overflows to -inf, a weight of 0). float32 halves the memory traffic
    of float64 over a 262k vocabulary; the sums below are taken in float64 or in blocks.
    """
    with np.errstate(over="ignore"):
        w = np.subtract(logits, logits.max(), dtype=np.float32)
        w *= np.float32(1 / temperature)  # temperature >= GREEDY_BELOW here: 1 / it is finite
    return np.exp(w, out=w)


# _draw finds the drawn token block by block: the blocks' sums, then one block's cumulative sum, instead of a
# float64 cumulative sum over the whole vocabulary (2 MB written per row for Gemma's 262k tokens).
_BLOCK = 4096


def _pick(cdf: np.ndarray, target: float) -> int:
    """The first index whose cumulative weight passes target; where rounding puts target past the end, the last
    index with weight (never a token of weight 0)."""
    i = int(np.searchsorted(cdf, target, side="right"))
    if i < len(cdf):
        return i
    return int(np.flatnonzero(np.diff(cdf, prepend=0.0) > 0)[-1])


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability weights[i] / sum(weights): one uniform number, inverse CDF."""
    if len(weights) <= _BLOCK:
        cdf = np.cumsum(weights, dtype=np.float64)
        return _pick(cdf, rng.random() * cdf[-1])
    starts = np.arange(0, len(weights), _BLOCK)
    block_cdf = np.cumsum(np.add.reduceat(weights, starts), dtype=np.float64)  # float32 block sums: 4096 terms
    target = rng.random() * block_cdf[-1]
    b = _pick(block_cdf, target)
    cdf = np.cumsum(weights[starts[b] : starts[b] + _BLOCK], dtype=np.float64)
    return int(starts[b]) + _pick(cdf, target - (block_cdf[b - 1] if b else 0.0))


def _nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (into weights) of the smallest set of most likely tokens holding top_p of the mass.

    Looked for among the best _NUCLEUS_CANDIDATES first, then 8x as many while they hold too little: a flat
    distribution over 262k tokens would otherwise cost a full sort (~20 ms a row)."""
    total = float(weights.sum(dtype=np.float64))
    n = _NUCLEUS_CANDIDATES
    while True:
        if n >= len(weights):
            cand = np.arange(len(weights))
            break
        cand = np.argpartition(weights, -n)[-n:]
        if weights[cand].sum(dtype=np.float64) >= top_p * total:
            break
        n *= 8
    order = cand[np.argsort(-weights[cand], kind="stable")]
    cum = np.cumsum(weights[order], dtype=np.float64)
    keep = int(np.searchsorted(cum, top_p * total, side="left")) + 1
    return order[:keep]


def _argmax(logits: np.ndarray, allowed: np.ndarray | None) -> int:
    """The best token the mask allows. The unmasked best first: it is allowed at most steps (inside a string
    nearly every token is), and then no masked copy of the row is made."""
    token = int(np.argmax(logits))
    if allowed is None or allowed[token]:
        return token
    ids = np.flatnonzero(allowed)
    if len(ids) < len(logits) // 8:  # a few allowed (JSON's punctuation): look at those alone
        return int(ids[np.argmax(logits[ids])])  # ids ascend: a tie goes to the lowest id, as np.argmax's would
    return int(np.argmax(np.where(allowed, logits, np.float32(-np.inf))))


def _draw_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Temperature, top-k, min-p, top-p (llama.cpp's and vLLM's order), then one draw. Tokens dropped by min-p
    keep their place with weight 0, so no vocabulary-wide array of ids is made unless top-k or top-p cut."""
    ids = None
    if 0 < params.top_k < len(logits):
        ids = np.argpartition(logits, -params.top_k)[-params.top_k :]  # the same set after temperature
        logits = logits[ids]
    weights = _weights(logits, params.temperature)
    if params.min_p > 0:  # probs >= min_p * max(probs), and the largest weight is 1
        np.putmask(weights, weights < params.min_p, np.float32(0))
    if params.top_p < 1:
        keep = _nucleus(weights, params.top_p)
        weights, ids = weights[keep], (keep if ids is None else ids[keep])
    pick = _draw(weights, rng)
    return pick if ids is None else int(ids[pick])


def sample(
    raw_logits: np.ndarray,
    params: SamplingParams,
    rng: np.random.Generator,
    prompt_ids: list[int],
    output_ids: list[int],
    allowed: np.ndarray | None = None,
    breakers: Breakers | None = None,
) -> tuple[int, TokenLogprobs | None]:
    """Choose the next token from one row of logits [V]. temperature 0 is argmax; raw_logits is not modified.

    allowed [V] bool, from a grammar, rules the other tokens out before any other processing. breakers: DRY's
    sequence breakers compiled for this vocabulary (dry.breakers_for); None, none. Logprobs are the model's
    own, from raw_logits.
    """
    logits = raw_logits
    processed = bool(params.logit_bias) or params.needs_history
    if allowed is not None and (processed or not params.greedy):
        logits = np.where(allowed, raw_logits, np.float32(-np.inf))
    if processed:
        logits = apply_penalties(logits.astype(np.float32, copy=logits is raw_logits), params, prompt_ids, output_ids)
        if params.dry_on:  # after the penalties, as in llama.cpp's default chain
            apply_dry(logits, params, prompt_ids, output_ids, breakers)
    if params.greedy:
        token = _argmax(logits, allowed if logits is raw_logits else None)
    else:
        token = _draw_token(logits, params, rng)
    return token, (None if params.logprobs is None else token_logprobs(raw_logits, token, params.logprobs))


def token_logprobs(raw_logits: np.ndarray, token: int, k: int) -> TokenLogprobs:
    """Log-softmax of the unprocessed logits: the chosen token's value and the k best. The row stays float32
    (a float64 copy of a 262k row costs more than the rest); the normaliser is summed in float64."""
    x = raw_logits
    top_value = x.max()
    with np.errstate(over="ignore"):
        shifted = np.subtract(x, top_value, dtype=np.float32)
    logz = float(top_value) + float(np.log(np.exp(shifted, out=shifted).sum(dtype=np.float64)))
    top: list[tuple[int, float]] = []
    if k:
        best = np.argpartition(x, -k)[-k:]
        best = best[np.argsort(-x[best], kind="stable")]
        top = [(int(i), float(x[i]) - logz) for i in best]
    return TokenLogprobs(token, float(x[token]) - logz, top)
