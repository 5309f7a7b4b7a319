"""The loop guard: a structured answer may not loop in its lists, keys, strings, numbers, lines or tool calls.

A small model under a JSON schema goes on writing `"Rome", "Rome", ...` until max_tokens, and after a tool's
result calls the same tool again. A mask cannot see that coming (an item is a repeat only once it is complete), so
the guard reads the answer as it grows. A list item that repeats an earlier one verbatim, or is the fourth of a
family of near repeats ("2. Pour", "3. Pour", ...), is taken back with its separator and the list must close
(commas that would continue it are banned); an object's keys likewise. A string that ends in a loop, or whose
clauses form such a family, is cut and closed; a number past 17 digits ends. A second call of one tool, or a
call the conversation already holds a result for, is taken back and the calls end there. A plain-text answer
beside tools whose line is a third copy or the fifth of a family, or that loops within its lines, is taken back
and ended. The rules that read text are in repeated_lines.py. Each list, object, string or answer is taken back
at most once, so the guard ends.

Text that could still be taken back is held: not streamed until the item is known to be new. Greedy stays
deterministic: the guard's decisions depend on the tokens only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from slmserve.engine import repeated_lines as loops

if TYPE_CHECKING:  # the vocabulary facts live with the other vocabulary tables, in structured.py
    from slmserve.engine.structured import GuardVocab

_QUOTE, _BACKSLASH, _COMMA, _LT = ord('"'), ord("\\"), ord(","), ord("<")
_OPEN, _CLOSE = b"[{", b"]}"
CALL_OPEN = b"<tool_call>"


@dataclass
class _Frame:
    """An open list or object of the answer."""

    kind: int  # ord("[") or ord("{")
    start: int  # byte offset of its bracket: names it across a rebuild
    item_start: int  # where the current item (list) or member (object) begins
    sep: int | None = None  # offset of the comma before the current item; None for the first
    seen: set[bytes] = field(default_factory=set)  # earlier items (list) or keys (object)
    family: loops.NearRepeats = field(default_factory=loops.NearRepeats)  # the same, to find near repeats
    key_open: bool = True  # object: the current member's key is not read yet


def call_key(name: str, arguments: object) -> str:
    """A tool call in one canonical form, to compare calls whatever their key order or spacing."""
    return json.dumps({"name": name, "arguments": arguments}, sort_keys=True, separators=(",", ":"))


class LoopGuard:
    """One answer's JSON as it grows: the items of every open list, what is held back, what is banned.

    `enabled` False keeps only the scan (the budget close reads `in_string`) and never holds or takes back.
    """

    def __init__(self, vocab: GuardVocab, enabled: bool = True, answered_calls: frozenset[str] = frozenset()):
        self.vocab = vocab
        self.enabled = enabled
        self.answered_calls = answered_calls
        self.frozen: set[int] = set()  # frames (by start offset) that must close: a repeat was taken back
        self.no_calls = False  # an answered call was taken back: no more calls
        self.must_end = False  # a plain-text answer looped: it ends once the forced bytes are written
        self.cut_strings: set[int] = set()  # strings (by start offset) a loop was cut from: closed at once
        self._string_loop = False  # the repeat just found is a loop inside a string
        self.taken_back = 0  # tokens taken back so far (for the record)
        self.silent: set[int] = set()  # tokens that carry no text: the end-of-answer token
        # After a take-back, what the model must write next: the end of the item kept (the bytes its last token
        # shared with the comma) and the bracket that closes its list. Left to choose, a small model writes the
        # repeat into the item instead (`"Rome_with_the_Pope_19_19_19..."`).
        self.forced = b""
        self._tokens: list[int] = []
        self._ends: list[int] = []  # byte offset where each token ends
        self._released = 0  # tokens released to the detokenizer
        self._reset_scan()

    def _reset_scan(self) -> None:
        self.buf = bytearray()
        self.in_string = self._escape = False
        self._stack: list[_Frame] = []
        self._string_start = 0
        self._clauses = loops.Clauses(0)  # the clauses of the string being written
        self._call_start: int | None = None  # offset of the call being written (held while answered calls exist)
        self._top_start = 0  # offset where the current top-level value began
        self._text = False  # a plain-text answer (tools "auto"): only its lines are watched
        self._lines = loops.RepeatedLines()
        self._decided = False  # the answer's first byte that is not a space has been read
        self._called: set[str] = set()  # the tools this answer has called
        self._closing_bracket = b""  # what closes the list or object of the repeat last found

    def push(self, token: int, text: bool = True) -> int:
        """Add a sampled token; the number of tokens to take back (0: none). A token that is not text (the end
        of the answer) is only held in order, and is in `silent`."""
        self._tokens.append(token)
        if not text:
            self.silent.add(token)
        start, piece = len(self.buf), self.vocab.pieces[token] if text else b""
        self.forced = self.forced[len(piece) :] if self.forced.startswith(piece) else b""
        self._string_loop = False
        back_to = self._scan(piece, start)
        self._ends.append(len(self.buf))
        if back_to is None or not self.enabled:
            return 0
        keep = sum(1 for end in self._ends if end <= back_to)
        if keep < self._released:  # streamed text is never taken back
            self.forced = b'"' if self._string_loop else b""  # a loop in a string still ends: closed here
            return 0
        kept_end = self._ends[keep - 1] if keep else 0
        self.forced = bytes(self.buf[kept_end:back_to]) + (b"" if self.no_calls else self._closing_bracket)
        return len(self._tokens) - keep

    def rollback(self, n: int) -> None:
        """Forget the last n tokens (taken back): rescan what is kept."""
        kept = self._tokens[: len(self._tokens) - n]
        self.taken_back += n
        self._tokens, self._ends = [], []
        self._reset_scan()
        for token in kept:  # a repeat cannot be found again: the frames it was in are frozen, or calls closed
            self._tokens.append(token)
            self._scan(self.vocab.pieces[token], len(self.buf))
            self._ends.append(len(self.buf))
        self._released = min(self._released, len(self._tokens))

    def release(self, final: bool = False) -> list[int]:
        """Tokens that can no longer be taken back (all of them when final), in order, each once."""
        hold = len(self.buf) if final or not self.enabled else self._hold_from()
        n = self._released
        while n < len(self._tokens) and self._ends[n] <= hold:
            n += 1
        out, self._released = self._tokens[self._released : n], n
        return out

    def _hold_from(self) -> int:
        """The first byte that may still be taken back."""
        marks = [f.sep for f in self._stack if f.sep is not None and (f.kind == _OPEN[0] or f.key_open)]
        if self._call_start is not None:
            marks.append(self._call_start)
        if self._text and self._lines.may_repeat(self.buf):
            marks.append(self._lines.start)
        if self.in_string and self._string_start not in self.cut_strings:  # the copies of a loop to take back
            marks.append(max(self._string_start + 1, len(self.buf) - 2 * loops.MAX_UNIT))
        return min(marks, default=len(self.buf))

    def ban(self, allowed: np.ndarray) -> None:
        """Rule out, in a grammar's mask [V] bool, the tokens that would continue a frozen list or begin a call,
        or, right after a take-back, all but those that write what is forced."""
        if not self.enabled:
            return
        if self.forced:
            ids = self.vocab.by_first.get(self.forced[0], np.empty(0, dtype=np.int64))
            ids = [i for i in ids[allowed[ids]] if _agrees(self.vocab.pieces[i], self.forced)]
            if ids:
                allowed[:] = False
                allowed[ids] = True
                return
            self.forced = b""  # the grammar allows none of it (e.g. minItems): the bans below only
        if self.must_end and len(ends := self.vocab.ends[allowed[self.vocab.ends]]):
            allowed[:] = False
            allowed[ends] = True
            return
        banned: list[int] = []
        if self.no_calls and not self._stack:
            banned += list(self.vocab.angles[allowed[self.vocab.angles]])
        if self.frozen and any(f.start in self.frozen for f in self._stack):
            commas = self.vocab.commas[allowed[self.vocab.commas]]
            banned += [t for t in commas if self._continues_frozen(self.vocab.pieces[t])]
        if self._stack and not self.in_string and loops.number_digits(self.buf) >= loops.MAX_DIGITS:
            banned += list(self.vocab.numeric[allowed[self.vocab.numeric]])
        if banned and len(banned) < np.count_nonzero(allowed):  # never all: the grammar may need it (minItems)
            allowed[banned] = False

    def _continues_frozen(self, piece: bytes) -> bool:
        """Whether these bytes, written next, put a comma directly in a frozen list or object."""
        in_string, escape = self.in_string, self._escape
        frozen = [f.start in self.frozen for f in self._stack]
        for b in piece:
            if in_string:
                escape, in_string = (False, True) if escape else (b == _BACKSLASH, b != _QUOTE)
            elif b == _QUOTE:
                in_string = True
            elif b in _OPEN:
                frozen.append(False)
            elif b in _CLOSE and frozen:
                frozen.pop()
            elif b == _COMMA and frozen and frozen[-1]:
                return True
        return False

    def _scan(self, piece: bytes, offset: int) -> int | None:
        """Read a token's bytes; the offset to take back to when they complete a repeat, else None."""
        back_to = None
        for i, b in enumerate(piece, offset):
            self.buf.append(b)
            if self._text:
                if back_to is None and not self.must_end and (found := self._lines.read(self.buf, i)) is not None:
                    back_to, self.must_end, self._closing_bracket = found, True, b""
                continue
            if self.in_string:
                if self._escape:
                    self._escape = False
                elif b == _BACKSLASH:
                    self._escape = True
                elif b == _QUOTE:
                    self.in_string = False
                    back_to = self._key_read(i) if back_to is None else back_to
                elif b in loops.BOUNDARY and back_to is None and self._string_start not in self.cut_strings:
                    found = loops.loop_at(self.buf, self._string_start + 1, i)
                    found = self._clauses.done(self.buf, i) if found is None else found
                    if found is not None:  # the string is to be closed there
                        self.cut_strings.add(self._string_start)
                        self._closing_bracket, self._string_loop, back_to = b'"', True, found
            elif b == _QUOTE:
                self.in_string, self._string_start, self._decided = True, i, True
                self._clauses = loops.Clauses(i)
            elif b in _OPEN:
                self._decided = True
                if not self._stack:
                    self._top_start = i
                self._stack.append(_Frame(b, i, i + 1))
            elif b in _CLOSE and self._stack:
                found = self._item_done(i)
                self._stack.pop()
                if not self._stack:
                    found = self._value_done(i) if found is None else found
                back_to = found if back_to is None else back_to
            elif b == _COMMA and self._stack:
                found = self._item_done(i)
                back_to = found if back_to is None else back_to
                top = self._stack[-1]
                top.sep, top.item_start, top.key_open = i, i + 1, True
            elif not self._stack:
                self._outside(b, i)
        return back_to

    def _outside(self, b: int, i: int) -> None:
        """A byte outside any JSON value: a call's tags, the newlines between calls, or a plain-text answer."""
        if b == _LT and (self.answered_calls or self._called):  # a call that may repeat: held until complete
            self._call_start = i
        elif b == ord("/") and self.buf[i - 1] == _LT:
            self._call_start = None  # a call's closing tag
        elif not self._decided and b not in b" \n":
            self._text = b not in b'<{["'  # an answer of plain text: nothing to guard
        if b not in b" \n":
            self._decided = True

    def _item_done(self, i: int) -> int | None:
        """A list's item ends at i: the comma before it when it repeats an earlier item."""
        top = self._stack[-1]
        if top.kind != _OPEN[0]:
            return None
        item = bytes(self.buf[top.item_start : i]).strip()
        return self._repeat(top, item, b"]", loops.item_text(item)) if item else None

    def _key_read(self, i: int) -> int | None:
        """A string closed at i: when it is an object's key that repeats an earlier one, the comma before it."""
        if not self._stack or self._stack[-1].kind != _OPEN[1] or not self._stack[-1].key_open:
            return None
        top = self._stack[-1]
        top.key_open = False
        key = bytes(self.buf[self._string_start : i + 1])
        return self._repeat(top, key, b"}", key[1:-1])

    def _repeat(self, top: _Frame, value: bytes, bracket: bytes, text: bytes | None) -> int | None:
        """The comma before `value` when it repeats an earlier item (or key) of `top`, or its text is the fourth of
        a family of near repeats there; `top` is then frozen (to be closed by `bracket`). Else None, and `value`
        is remembered."""
        near = text is not None and top.family.loops(text)
        if (value in top.seen or near) and top.sep is not None and top.start not in self.frozen:
            self.frozen.add(top.start)
            self._closing_bracket, self._string_loop = bracket, False
            return top.sep
        top.seen.add(value)
        return None

    def _value_done(self, i: int) -> int | None:
        """A top-level value ends at i: when it is a tool call already answered, where its call began."""
        start, self._call_start = self._call_start, None
        try:
            value = json.loads(bytes(self.buf[self._top_start : i + 1]))
            key = call_key(value["name"], value["arguments"])
        except (ValueError, KeyError, TypeError):
            return None  # not a call: an answer in JSON
        if start is None or self.no_calls:
            self._called.add(value["name"])
            return None
        if key not in self.answered_calls and value["name"] not in self._called:
            self._called.add(value["name"])
            return None
        self.no_calls = True
        return start


def _agrees(piece: bytes, forced: bytes) -> bool:
    """A token that writes the forced bytes, or the first of them."""
    return forced.startswith(piece) or piece.startswith(forced)
