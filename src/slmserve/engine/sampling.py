"""Sampling parameters and the sampler: one vocabulary row of logits in, one token out.

Backend-free on purpose (numpy only): the llama.cpp and PyTorch runners both hand their logits here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from slmserve.engine.dry import DEFAULT_BREAKERS, MAX_BREAKER_BYTES, MAX_BREAKERS, Breakers, apply_dry

# With top_p < 1, the nucleus is first looked for among this many best tokens; a full sort only when they
# hold less than top_p of the mass. Sorting all 49k logits for every sequence would cost more than the decode.
_NUCLEUS_CANDIDATES = 1024

# Temperatures below this sample as argmax: logits / 1e-300 overflow to inf and the softmax turns to NaN.
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


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _draw(probs: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(probs, dtype=np.float64)
    pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(ids[min(pick, len(ids) - 1)])


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (into probs) of the smallest set of most likely tokens holding top_p of the mass."""
    if len(probs) > _NUCLEUS_CANDIDATES:
        cand = np.argpartition(probs, -_NUCLEUS_CANDIDATES)[-_NUCLEUS_CANDIDATES:]
        if probs[cand].sum() < top_p * probs.sum():
            cand = np.arange(len(probs))
    else:
        cand = np.arange(len(probs))
    order = cand[np.argsort(-probs[cand], kind="stable")]
    cum = np.cumsum(probs[order], dtype=np.float64)
    keep = int(np.searchsorted(cum, top_p * probs.sum(), side="left")) + 1
    return order[:keep]


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
    if allowed is not None:
        logits = np.where(allowed, raw_logits, np.float32(-np.inf))
    if params.logit_bias or params.needs_history:
        logits = apply_penalties(logits.astype(np.float32, copy=allowed is None), params, prompt_ids, output_ids)
        if params.dry_on:  # after the penalties, as in llama.cpp's default chain
            apply_dry(logits, params, prompt_ids, output_ids, breakers)
    if params.greedy:
        token = int(np.argmax(logits))
    else:
        ids = np.arange(len(logits))
        # float64: a logit a penalty pushed to float32's floor, over a small temperature, stays finite.
        scaled = logits.astype(np.float64) / params.temperature
        if 0 < params.top_k < len(scaled):
            ids = np.argpartition(scaled, -params.top_k)[-params.top_k :]
            scaled = scaled[ids]
        probs = _softmax(scaled)
        if params.min_p > 0:
            keep = probs >= params.min_p * probs.max()
            ids, probs = ids[keep], probs[keep]
        if params.top_p < 1:
            keep = _nucleus(probs, params.top_p)
            ids, probs = ids[keep], probs[keep]
        token = _draw(probs, ids, rng)
    return token, (None if params.logprobs is None else token_logprobs(raw_logits, token, params.logprobs))


def token_logprobs(raw_logits: np.ndarray, token: int, k: int) -> TokenLogprobs:
    """Log-softmax of the unprocessed logits: the chosen token's value and the k best."""
    x = raw_logits.astype(np.float64)
    logz = x.max() + np.log(np.exp(x - x.max()).sum())
    top: list[tuple[int, float]] = []
    if k:
        best = np.argpartition(x, -k)[-k:]
        best = best[np.argsort(-x[best], kind="stable")]
        top = [(int(i), float(x[i] - logz)) for i in best]
    return TokenLogprobs(token, float(x[token] - logz), top)
