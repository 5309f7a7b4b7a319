"""The content filter: user input holding a blocked word is refused before it reaches the model."""

from __future__ import annotations

import re
from collections.abc import Iterable

REFUSAL = "Prompt contains inappropriate content"


class ContentFilter:
    """Whole-word, case-insensitive matching of a configurable word list ("hate" blocks "I HATE it", not "whatever")."""

    def __init__(self, words: Iterable[str]) -> None:
        words = [w.strip() for w in words if w.strip()]
        alternatives = "|".join(map(re.escape, words))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I) if words else None

    def blocks(self, *texts: str | None) -> bool:
        return self._pattern is not None and any(t and self._pattern.search(t) for t in texts)
