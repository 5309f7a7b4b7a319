"""Special-token text in prompts: found in one pass, and special only where the prompt's own author wrote it.

llama.cpp and Hugging Face read `<|im_start|>` in text as the special token. That is right for what a chat
template writes, and wrong for what a user writes inside a message: there it lets the user open a system turn of
their own. So a prompt is tokenized as parts, each marked whether special-token text in it counts as special; the
text between special tokens is tokenized with no special parsing at all.

Splitting here also keeps the cost linear: llama.cpp's own partition walks its fragment list from the start for
every match, so 32,000 `<|im_start|>` in one prompt took it 17 s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

# (text, whether special-token text in it is the special token)
Part = tuple[str, bool]

# C's isspace, which llama.cpp strips beside tokens marked lstrip/rstrip.
_C_SPACE = " \t\n\v\f\r"


class SpecialTextError(ValueError):
    """User text holds special-token text that cannot be kept plain in this prompt."""


class SpecialTexts:
    """A vocabulary's special tokens by their text, found leftmost-longest in one pass (a trie as a regex)."""

    def __init__(self, ids: Mapping[str, int], lstrip: Iterable[int] = (), rstrip: Iterable[int] = ()) -> None:
        self.ids = {text: token for text, token in ids.items() if text}
        self.lstrip, self.rstrip = frozenset(lstrip), frozenset(rstrip)
        self._pattern = re.compile(_trie_pattern(self.ids)) if self.ids else None

    def holds(self, text: str) -> bool:
        """Whether the text holds any special token's text."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def split(self, parts: Iterable[Part]) -> list[str | int]:
        """The parts' joined text as runs of plain text and special token ids, as llama.cpp's partition splits
        it: a special token's text counts only inside a part marked special, and whitespace goes from beside a
        token marked lstrip (before it) or rstrip (after it). Plain runs span parts, as they would in one text."""
        out: list[str | int] = []
        run: list[str] = []
        strip_next = False

        def add(text: str) -> None:
            nonlocal strip_next
            if strip_next:
                text = text.lstrip(_C_SPACE)
            if text:
                run.append(text)
                strip_next = False

        for text, special in parts:
            if not special or self._pattern is None:
                add(text)
                continue
            pos = 0
            for m in self._pattern.finditer(text):
                add(text[pos : m.start()])
                token = self.ids[m.group()]
                plain = "".join(run)
                if token in self.lstrip:
                    plain = plain.rstrip(_C_SPACE)
                if plain:
                    out.append(plain)
                run.clear()
                out.append(token)
                strip_next = token in self.rstrip
                pos = m.end()
            add(text[pos:])
        if run:
            out.append("".join(run))
        return out

    def encode(
        self,
        parts: Iterable[Part],
        plain: Callable[[str], list[int]],
        around: tuple[list[int], list[int]],
        add_special: bool,
    ) -> list[int]:
        """Token ids of the split parts: each distinct plain run through `plain` once (a text may repeat one
        thousands of times), special tokens as they are, and with add_special the tokenizer's own ids around."""
        ids = list(around[0]) if add_special else []
        runs: dict[str, list[int]] = {}
        for piece in self.split(parts):
            if isinstance(piece, int):
                ids.append(piece)
                continue
            if piece not in runs:
                runs[piece] = plain(piece)
            ids += runs[piece]
        return ids + around[1] if add_special else ids


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of the words, longest first, that tries one branch per character: with thousands of
    special tokens (Gemma has 6,000) a plain alternation would try each of them at every '<'."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _branches(trie)


def _branches(node: dict) -> str:
    branches = [re.escape(ch) + _branches(child) for ch, child in node.items() if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # A word ends here and longer ones go on: the greedy ? tries the longer first.
    return f"(?:{body})?" if "" in node else body
