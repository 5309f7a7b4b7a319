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
        self._closer: Closer | None = None
        self._guard_vocab: GuardVocab | None = None
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

    @property
    def guard_vocab(self) -> GuardVocab:
        with self._lock:  # ~50 ms for a 49k vocabulary, on the first structured request
            if self._guard_vocab is None:
                ends = tuple(self._tokenizer.eog_token_ids)
                self._guard_vocab = GuardVocab(
                    self._tokenizer.token_bytes, self.vocab_size, self._tokenizer.vocab_size, ends
                )
            return self._guard_vocab

    @property
    def closer(self) -> Closer:
        with self._lock:
            if self._closer is None:
                self._closer = Closer(self._tokenizer, self.vocab_size)
            return self._closer

    def matcher(self, grammar: str) -> Constraint:
        """A fresh matcher for one request, with its shortest close from the start (the smallest answer).
        Raises GrammarError naming the problem."""
        matcher = llg.LLMatcher(self.lltokenizer, grammar, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        constraint = Constraint(matcher, self.closer)
        constraint.keep_closing(constraint.close(MAX_CLOSE, in_string=False))
        return constraint


# The longest close looked for; a grammar whose answers cannot be closed within it gets no budget close.
MAX_CLOSE = 256

# What closes an answer, tried in this order at each point: inside a string, its end (with the brackets after
# it); elsewhere the brackets, then a separator (for the next required field, whose key the grammar then forces;
# before values, or a number would grow a digit at a time), then the smallest values.
_IN_STRING = ['"}]', '"]}', '"}}', '"]]', '"}', '"]', '"']
_OUTSIDE = [
    *("]}", "}]", "}}", "]]", "}", "]", ", ", ","),
    *(" 0", "0", ' ""', '""', " []", "[]", " {}", "{}", " false", "false", " null", "null", " true", "true"),
    *(' "', '"', " [", "[", " {", "{"),
]


class Closer:
    """The tokens that close JSON, in the order to try them: those of the candidates that are one token."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        def single(texts: list[str]) -> list[int]:
            ids = [tokenizer.encode(t, add_special=False, special=False) for t in texts]
            return [i[0] for i in ids if len(i) == 1]

        self.in_string = single(_IN_STRING)
        self.outside = single(_OUTSIDE)
        self.token_bytes = tokenizer.token_bytes
        self.vocab_size = vocab_size


def _string_state(in_string: bool, escape: bool, piece: bytes) -> tuple[bool, bool]:
    """Whether JSON text is inside a string (and after a backslash) once these bytes are added."""
    for b in piece:
        if in_string:
            escape, in_string = (False, True) if escape else (b == 0x5C, b != 0x22)
        elif b == 0x22:
            in_string = True
    return in_string, escape


class Constraint:
    """One request's grammar state: which tokens may come next, and the tokens it has taken.

    `closing` holds the shortest close found from the current state (None: none within reach): the engine
    keeps it up to date near the end of a budget, so an answer that runs into max_tokens ends valid.
    """

    def __init__(self, matcher: llg.LLMatcher, closer: Closer | None = None) -> None:
        self.matcher = matcher
        self.closer = closer
        self.num_tokens = 0  # tokens taken so far
        self.closing: list[int] | None = None
        self.closing_at = -1  # num_tokens when `closing` was found

    def keep_closing(self, closing: list[int] | None) -> None:
        self.closing, self.closing_at = closing, self.num_tokens

    def close(self, limit: int, in_string: bool) -> list[int] | None:
        """The tokens that complete the answer from here, shortest first by a greedy walk (brackets before
        values before separators; what the grammar forces as it comes), or None when it takes over `limit`."""
        m, out, escape = self.matcher.deep_copy(), [], False
        while not m.is_accepting():
            if len(out) >= limit or m.is_error():
                return None
            forced = m.compute_ff_tokens()
            if forced:
                m.consume_tokens(forced)
                picked = forced
            else:
                order = self.closer.in_string if in_string else self.closer.outside
                picked = next(([t] for t in order if m.try_consume_tokens([t]) == 1), None)
                if picked is None:
                    picked = [_first_allowed(m, self.closer.vocab_size)]
                    if picked[0] < 0 or not m.consume_token(picked[0]):
                        return None
            out.extend(picked)
            for t in picked:
                in_string, escape = _string_state(in_string, escape, self.closer.token_bytes(t))
        return out if len(out) <= limit else None

    def rollback(self, n: int) -> None:
        """Take back the last n tokens the grammar accepted."""
        if n and not self.matcher.rollback(n):
            raise RuntimeError(f"the grammar could not take back {n} tokens: {self.matcher.get_error()}")
        self.num_tokens -= n

    def accept(self, token: int) -> bool:
        """Advance past a sampled token; False if the grammar refused it (the matcher is then in error)."""
        ok = self.matcher.consume_token(token)
        self.num_tokens += ok
        return ok

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


def _first_allowed(matcher: llg.LLMatcher, vocab_size: int) -> int:
    """The lowest token id the grammar allows next (short pieces come first in BPE vocabularies); -1 if none."""
    bitmask = llg_np.allocate_token_bitmask(1, vocab_size)
    llg_np.fill_next_token_bitmask(matcher, bitmask)
    bits = np.unpackbits(bitmask[0].view(np.uint8), bitorder="little")
    hits = np.flatnonzero(bits)
    return int(hits[0]) if len(hits) else -1


def allowed_tokens(bitmask_row: np.ndarray, vocab_size: int) -> np.ndarray:
    """One mask row [vocab/32] of int32 bits -> [V] bool, True where the token may come next."""
    return np.unpackbits(bitmask_row.view(np.uint8), bitorder="little")[:vocab_size].view(bool)


class GuardVocab:
    """Per-vocabulary facts the guard needs: each token's bytes, the tokens holding a comma or a '<', those that
    may go on writing a number, and the tokens that end an answer."""

    def __init__(self, token_bytes, vocab_size: int, num_tokens: int, ends: tuple[int, ...] = ()) -> None:
        self.ends = np.array(sorted(ends), dtype=np.int64)
        self.pieces = [token_bytes(i) if i < num_tokens else b"" for i in range(vocab_size)]
        self.commas = np.array([i for i, p in enumerate(self.pieces) if b"," in p], dtype=np.int64)
        by_first: dict[int, list[int]] = {}
        for i, p in enumerate(self.pieces):
            if p:
                by_first.setdefault(p[0], []).append(i)
        self.by_first = {b: np.array(ids, dtype=np.int64) for b, ids in by_first.items()}
        self.angles = np.array([i for i, p in enumerate(self.pieces) if b"<" in p], dtype=np.int64)
        numeric = b"0123456789.eE"
        self.numeric = np.array([i for i, p in enumerate(self.pieces) if p[:1] and p[0] in numeric], dtype=np.int64)
