"""Loops in a plain-text answer beside tools: the same line again and again (`#include "stdlib.h"` x 100).

After a tool's result a small model often answers in text that repeats one line to max_tokens, and an agent
then gets a cut answer (the OpenAI Agents SDK raises on it). DRY does not catch it: the line holds its sequence
breakers (`"`, newline), so no repeat it measures is long. The rule: a line of at least MIN_LINE bytes written a
third time, verbatim, is a loop; the loop guard takes that copy back and ends the answer.
"""

from __future__ import annotations

MIN_LINE = 8  # shorter lines ("}", "- Yes") repeat in good answers
THIRD = 3  # the copy that makes a loop: two may be a refrain


class RepeatedLines:
    """The lines of an answer as it grows, counted."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.start = 0  # where the line being written begins

    def newline(self, buf: bytearray, i: int) -> int | None:
        """The line ending at the newline at i is done: where it began when it is a loop's third copy."""
        line, start, self.start = bytes(buf[self.start : i]).strip(), self.start, i + 1
        if len(line) < MIN_LINE:
            return None
        self.counts[line] = self.counts.get(line, 0) + 1
        return start if self.counts[line] >= THIRD else None

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


def looping_tail(text: bytes) -> int | None:
    """Where the second copy of a loop at the end of text begins (the first copy is kept), else None: the same unit
    of 2-64 bytes at least 3 times verbatim (12 bytes or more), or, its digits aside, at least 8 times."""
    norm = text.translate(_DIGITS)
    for p in _periods(norm):  # a verbatim loop is a counting one too: one search finds both
        if text.endswith(text[-p:] * VERBATIM_COPIES) and (n := _run(text, p)) * p >= VERBATIM_BYTES:
            return len(text) - (n - 1) * p
        if norm.endswith(norm[-p:] * COUNTING_COPIES) and b"0" in norm[-p:]:
            return len(text) - (_run(norm, p) - 1) * p
    return None


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
