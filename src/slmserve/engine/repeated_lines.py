"""Loops the loop guard finds by their text: lines, strings that repeat themselves, families of near repeats.

After a tool's result a small model often answers in text that repeats one line to max_tokens (`#include
"stdlib.h"` x 100), and an agent then gets a cut answer (the OpenAI Agents SDK raises on it). DRY does not catch
it: the line holds its sequence breakers (`"`, newline), so no repeat it measures is long. The rules: a line of at
least MIN_LINE bytes written a third time, verbatim, is a loop, and so is a line that is the fifth of a family of
near repeats (below); the loop guard takes that copy back and ends the answer.
"""

from __future__ import annotations

import json
import os

_NEWLINE = ord("\n")
MIN_LINE = 8  # shorter lines ("}", "- Yes") repeat in good answers
THIRD = 3  # the copy that makes a loop: two may be a refrain


class RepeatedLines:
    """The lines of an answer as it grows, counted."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.family = NearRepeats(earlier=LINE_EARLIER)
        self.start = 0  # where the line being written begins

    def newline(self, buf: bytearray, i: int) -> int | None:
        """The line ending at the newline at i is done: where it began when it is a loop's third copy, or the fifth
        of a family of near repeats."""
        line, start, self.start = bytes(buf[self.start : i]).strip(), self.start, i + 1
        if len(line) < MIN_LINE:
            return None
        self.counts[line] = self.counts.get(line, 0) + 1
        return start if self.counts[line] >= THIRD or self.family.loops(line) else None

    def read(self, buf: bytearray, i: int) -> int | None:
        """The answer's byte at i is read: where a loop the text now ends in begins (its last line a third copy or
        the fifth of a family, or a unit repeated within its lines), else None."""
        if buf[i] == _NEWLINE and (found := self.newline(buf, i)) is not None:
            return found
        return loop_at(buf, 0, i, words=True) if buf[i] == _NEWLINE or buf[i] in BOUNDARY else None

    def may_repeat(self, buf: bytearray) -> bool:
        """Whether the line being written could still turn out a third copy (it is held until it cannot)."""
        current = bytes(buf[self.start :]).lstrip()
        return any(n == THIRD - 1 and line.startswith(current) for line, n in self.counts.items())


# Loops inside a JSON string: `"Architect, Architect, Architect, ..."`, `":23:23:23:23"`, `"30, 31, 32, 33, ..."`.
BOUNDARY = frozenset(b" ,.;:-/)")  # a unit of a loop ends at one of these (checked only there)
MAX_UNIT = 64
VERBATIM_COPIES, VERBATIM_BYTES = 3, 12
COUNTING_COPIES = 8  # digits aside: "2019, 2020, 2021" may be data; eight in a row is counting
TAIL_BYTES = COUNTING_COPIES * MAX_UNIT  # the most of a string's end a loop needs to show
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")


def looping_tail(text: bytes, words: bool = False) -> int | None:
    """Where the second copy of a loop at the end of text begins (the first copy is kept), else None: the same unit
    of 2-64 bytes at least 3 times verbatim (12 bytes or more), or, its digits aside, at least 8 times. With
    `words`, a unit without a letter or digit is no loop (plain text draws "---|---|---|" and "=========")."""
    norm = text.translate(_DIGITS)
    for p in _periods(norm):  # a verbatim loop is a counting one too: one search finds both
        if words and not any(chr(c).isalnum() for c in text[-p:]):
            continue
        if text.endswith(text[-p:] * VERBATIM_COPIES) and (n := _run(text, p)) * p >= VERBATIM_BYTES:
            return len(text) - (n - 1) * p
        if norm.endswith(norm[-p:] * COUNTING_COPIES) and b"0" in norm[-p:]:
            return len(text) - (_run(norm, p) - 1) * p
    return None


def loop_at(buf: bytearray, first: int, i: int, words: bool = False) -> int | None:
    """Text from `first` (a JSON string's first byte, or 0 for a plain-text answer) that ends at i in a loop
    (looping_tail, with `words`): where its second copy begins in buf, else None."""
    start = max(first, i + 1 - TAIL_BYTES)  # a loop shows in the tail: the cost stays flat
    found = looping_tail(bytes(buf[start : i + 1]), words)
    return None if found is None else start + found


def _periods(text: bytes) -> list[int]:
    """The periods (2 to MAX_UNIT) the end of text could have: where its last two bytes occur again before."""
    out, tail, lowest = [], text[-2:], max(0, len(text) - MAX_UNIT - 2)
    j = text.rfind(tail, lowest, len(text) - 1)
    while j >= 0:
        if (p := len(text) - 2 - j) >= 2 and len(text) >= VERBATIM_COPIES * p:
            out.append(p)
        j = text.rfind(tail, lowest, j + 1)
    return out


def _run(text: bytes, p: int) -> int:
    """How many copies of its last p bytes text ends with."""
    n = 1
    while (n + 1) * p <= len(text) and text[len(text) - (n + 1) * p : len(text) - n * p] == text[-p:]:
        n += 1
    return n


# Near repeats: a family of items that differ only in their ends or their digits ("Tokyo Shokukai", "Tokyo
# Shokuhai", "Tokyo Shokunin"; "2. Pour", "3. Pour"; "They're looking for a refund on Monday", "They're looking for
# refunds on Friday"). A pair may be meant and three may be a short list of like things ("What is the capital of
# France?" / "... Spain?" / "... Italy?"); the fourth of a family is a loop. Two items are near when, lowercased and
# digits aside, they share a beginning of NEAR_BYTES bytes and NEAR_SHARE of the shorter one. Measured on the
# structured eval's answers (docs/PERFORMANCE.md): the families of the answers that ran into max_tokens, few of
# those that closed.
NEAR_BYTES, NEAR_SHARE = 8, 0.6
NEAR_EARLIER = 3  # earlier near items that make an item a loop: the fourth of a family
LINE_EARLIER = 4  # lines of code are families more often than list items are ("print(a)", "print(b)", ...)
COUNTING_EARLIER = 7  # items with no letters ("2.2.4", "2019-01-05"): counting or dates; eight is counting
# A double holds 17 significant digits; a longer number is a model counting ("answer_index": 1113111122...) and
# loses digits in most JSON parsers (RFC 8259, section 6). The guard ends it there.
MAX_DIGITS = 17
_CLAUSE_ENDS = frozenset(b",.;")
_LOWER_DIGITS = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", b"abcdefghijklmnopqrstuvwxyz0000000000")


class NearRepeats:
    """The items of one list (or the keys of an object, the clauses of a string, the lines of an answer) as
    their normalized text, to tell when the next one is the fourth of a family."""

    def __init__(self, earlier: int = NEAR_EARLIER) -> None:
        self.earlier = earlier
        self.units: list[bytes] = []

    def loops(self, text: bytes) -> bool:
        """Whether this item completes a loop (it is then not remembered); else it is remembered."""
        unit = text.strip().translate(_LOWER_DIGITS)
        if len(unit) < 2:
            return False
        need = self.earlier if any(97 <= b <= 122 for b in unit) else COUNTING_EARLIER
        if sum(_near(unit, u) for u in self.units) >= need:
            return True
        self.units.append(unit)
        return False


class Clauses:
    """The clauses of one JSON string (its quote at `start`), split at commas, periods and semicolons."""

    def __init__(self, start: int) -> None:
        self.start, self.family = start, NearRepeats()
        self._clause = start + 1  # where the clause being written begins

    def done(self, buf: bytearray, i: int) -> int | None:
        """At a boundary byte at i: when it ends a clause that is the fourth of a family ("then add it to X, then
        add it to Y, ..."), where the string is to end (before the comma that began that clause, after a period)."""
        if buf[i] not in _CLAUSE_ENDS:
            return None
        start, self._clause = self._clause, i + 1
        if not self.family.loops(bytes(buf[start:i])):
            return None
        return start - 1 if start - 1 > self.start and buf[start - 1] != ord(".") else start


def _near(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    return len(os.path.commonprefix([a, b])) >= max(NEAR_BYTES, NEAR_SHARE * min(len(a), len(b)))


def item_text(item: bytes) -> bytes | None:
    """The text a list item is compared by for near repeats: a string's, or an object's first string value (its
    name, question or title); None for other items (numbers, lists), which only repeat verbatim."""
    if item[:1] == b'"':
        return item[1:-1]
    if item[:1] != b"{":
        return None
    try:
        value = json.loads(item)
    except ValueError:
        return None
    return next((v.encode() for v in value.values() if isinstance(v, str)), None) if isinstance(value, dict) else None


def number_digits(buf: bytearray) -> int:
    """The digits of the number JSON text ends in (0 when it ends in none)."""
    n = 0
    for b in reversed(buf[-4 * MAX_DIGITS :]):
        if 48 <= b <= 57:
            n += 1
        elif b not in b".eE+-":
            break
    return n
