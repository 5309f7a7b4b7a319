"""Incremental detokenization: token ids in, text deltas out, UTF-8 safe, with stop strings.

A token may carry half a UTF-8 character, and a stop string may span several tokens. Text is emitted only
once it can no longer turn out to be part of a stop string, so the streamed deltas always add up to the
text a non-streamed request returns.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable


class Detokenizer:
    """Turns one sequence's generated tokens into text. `token_bytes` maps a token id to its raw bytes."""

    def __init__(self, token_bytes: Callable[[int], bytes], stop: list[str] | None = None) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in (stop or []) if s]
        self._pending = ""  # decoded text held back: it may be the start of a stop string
        self.text = ""  # everything emitted so far
        self.stop_reason: str | None = None  # the stop string that ended the text, if one did

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now final. After a stop string matches, returns ''."""
        if self.stop_reason is not None:
            return ""
        self._pending += self._decoder.decode(self._token_bytes(token_id))
        return self._release(final=False)

    def flush(self) -> str:
        """The sequence ended for another reason: release what was held back (and any broken UTF-8)."""
        if self.stop_reason is not None:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._pending
        hits = [(i, s) for s in self._stop if (i := text.find(s)) >= 0]
        if hits:
            cut, self.stop_reason = min(hits)
            out, self._pending = text[:cut], ""
        else:
            hold = 0 if final else self._held_suffix(text)
            out, self._pending = text[: len(text) - hold], text[len(text) - hold :]
        self.text += out
        return out

    def _held_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if s.startswith(text[-n:]):
                    best = n
                    break
        return best
