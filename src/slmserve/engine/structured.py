"""Constrained decoding with llguidance: one grammar matcher per request, one token mask per step.

As in vLLM (`v1/structured_output/`), the grammar state lives beside the request and its mask is applied to the
logits row just before sampling; the scheduler never sees it. Each step's masks are computed on a helper
thread while the model runs the step (llama_decode and torch release the GIL; so does llguidance).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import llguidance as llg
import llguidance.numpy as llg_np
import numpy as np

# Compact JSON with one space after separators, as json.dumps writes it: a form small models have seen often,
# and one with no free whitespace, which they loop on (vLLM #38696, Ollama #2577). A schema's "x-guidance" key
# may ask for another form.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# Bounds on what one grammar may cost, well under llguidance's defaults: a request's grammar is user input.
LIMITS = {"initial_lexer_fuel": 500_000, "step_lexer_fuel": 100_000, "max_grammar_size": 100_000}


def closed_objects(schema: Any) -> Any:
    """A copy of a JSON schema where objects that list properties take no others unless they say so.

    JSON Schema's default allows any other key; a small model given that freedom goes on adding keys to
    max_tokens. llama.cpp's grammar converter makes the same choice ("reduces hallucinations").
    """
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_objects(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


class GrammarError(ValueError):
    """A schema, regex or grammar that cannot be compiled, with the reason."""


def grammar_from(kind: str, value: Any = None) -> str:
    """An llguidance grammar for a response format: json_schema (a schema), json_object, regex or lark (text)."""
    try:
        if kind == "json_object":
            return llg.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
        if kind == "json_schema":
            return llg.LLMatcher.grammar_from_json_schema(closed_objects(value), defaults=JSON_OPTIONS)
        if kind == "regex":
            return llg.LLMatcher.grammar_from_regex(value)
        if kind == "lark":
            return llg.LLMatcher.grammar_from_lark(value)
    except (ValueError, TypeError) as exc:
        raise GrammarError(str(exc)) from exc
    raise GrammarError(f"unknown grammar kind {kind!r}")


class _Vocab:
    """The engine's tokenizer in the shape llguidance's TokenizerWrapper reads: every token's bytes, specials marked."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id = min(tokenizer.eog_token_ids)
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        self.tokens: list[bytes] = []
        self.special_token_ids: list[int] = []
        text_of = getattr(tokenizer, "token_text", None)
        for i in range(vocab_size):
            piece = tokenizer.token_bytes(i) if i < tokenizer.vocab_size else b""
            if not piece and i < tokenizer.vocab_size:
                # A token with no text (a control token): 0xff marks it special, so no grammar emits it as text.
                name = text_of(i) if text_of else ""
                piece = b"\xff" + (name or f"<[{i}]>").encode("utf-8")
                self.special_token_ids.append(i)
            self.tokens.append(piece)

    def __call__(self, text: str) -> list[int]:
        if isinstance(text, bytes):
            raise TypeError("text only")  # TokenizerWrapper probes for bytes support; it then sends str
        return self._tokenizer.encode(text, add_special=False)


class Grammars:
    """Compiles grammars against one model's vocabulary. Thread-safe; the vocabulary is read on first use."""

    def __init__(self, tokenizer, vocab_size: int | None = None) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self._lltokenizer: llg.LLTokenizer | None = None
        self._lock = threading.Lock()
        self._limits = llg.LLParserLimits(**LIMITS)

    @property
    def lltokenizer(self) -> llg.LLTokenizer:
        with self._lock:  # built once (~0.3 s for a 49k vocabulary), not at load: most servers never need it
            if self._lltokenizer is None:
                vocab = _Vocab(self._tokenizer, self.vocab_size)
                eos = sorted(self._tokenizer.eog_token_ids)
                wrapper = llg.TokenizerWrapper(vocab)
                self._lltokenizer = llg.LLTokenizer(wrapper, n_vocab=self.vocab_size, eos_token=eos)
            return self._lltokenizer

    def matcher(self, grammar: str) -> Constraint:
        """A fresh matcher for one request. Raises GrammarError naming the problem."""
        matcher = llg.LLMatcher(self.lltokenizer, grammar, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return Constraint(matcher)


class Constraint:
    """One request's grammar state: which tokens may come next, and the tokens it has taken."""

    def __init__(self, matcher: llg.LLMatcher) -> None:
        self.matcher = matcher

    def accept(self, token: int) -> bool:
        """Advance past a sampled token; False if the grammar refused it (the matcher is then in error)."""
        return self.matcher.consume_token(token)

    @property
    def finished(self) -> bool:
        """The grammar is complete and nothing more may follow it."""
        return self.matcher.is_stopped()

    @property
    def error(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None


class MaskFiller:
    """Computes a step's token masks on a helper thread, so they are ready when the step's logits are."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._executor: llg.LLExecutor | None = None

    def start(self, constraints: list[Constraint], vocab_size: int) -> Future[np.ndarray]:
        """Begin filling masks [len(constraints), vocab/32] (bit i of row r: token i allowed for constraints[r])."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmserve-mask")
            self._executor = llg.LLExecutor()
        return self._pool.submit(self._fill, constraints, vocab_size)

    def _fill(self, constraints: list[Constraint], vocab_size: int) -> np.ndarray:
        bitmask = llg_np.allocate_token_bitmask(len(constraints), vocab_size)
        pairs = [(c.matcher, row) for row, c in enumerate(constraints)]
        llg_np.fill_next_token_bitmask_par(self._executor, pairs, bitmask)
        return bitmask

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def allowed_tokens(bitmask_row: np.ndarray, vocab_size: int) -> np.ndarray:
    """One mask row [vocab/32] of int32 bits -> [V] bool, True where the token may come next."""
    return np.unpackbits(bitmask_row.view(np.uint8), bitorder="little")[:vocab_size].view(bool)
