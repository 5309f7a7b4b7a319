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
