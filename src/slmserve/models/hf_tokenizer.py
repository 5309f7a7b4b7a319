"""A Hugging Face tokenizer behind the engine's Tokenizer protocol (the torch engine's; needs slmserve[torch])."""

from __future__ import annotations

import re
from collections.abc import Iterable

from transformers.convert_slow_tokenizer import bytes_to_unicode

from slmserve.models.special_text import Part, SpecialTexts

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class HFTokenizer:
    """A transformers tokenizer behind the engine's Tokenizer protocol, each token's raw bytes cached.

    Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) spell bytes as printable characters; SentencePiece ones
    (Llama 2, Gemma) use "\u2581" for a space and <0xNN> for byte fallback. Special tokens have no bytes: they
    never appear in generated text, as with llama.cpp.
    """

    def __init__(self, tokenizer, eos_token_ids: Iterable[int] = (), vocab_size: int | None = None) -> None:
        self.hf = tokenizer
        # The model's output may be wider than the vocabulary (padded embeddings): those ids decode to nothing.
        self.vocab_size = max(len(tokenizer), vocab_size or 0)
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else -1
        self.eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1
        self.eog_token_ids = frozenset(t for t in (self.eos_token_id, *eos_token_ids) if t >= 0)
        special = set(tokenizer.all_special_ids) | {
            i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special
        }
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        pieces += [None] * (self.vocab_size - len(pieces))
        decoder = tokenizer.backend_tokenizer.decoder
        byte_level = decoder is not None and '"ByteLevel"' in decoder.__getstate__().decode()
        to_bytes = self._byte_level if byte_level else self._sentencepiece
        self._pieces = [b"" if i in special or p is None else to_bytes(p) for i, p in enumerate(pieces)]
        added = tokenizer.added_tokens_decoder
        self._specials = SpecialTexts(
            {tok.content: i for i, tok in added.items() if tok.special},
            lstrip=[i for i, tok in added.items() if tok.special and tok.lstrip],
            rstrip=[i for i, tok in added.items() if tok.special and tok.rstrip],
        )
        # What add_special_tokens puts around a text: BOS before, anything else (EOS, SEP) after.
        around = tokenizer("", add_special_tokens=True)["input_ids"]
        lead = 1 if around[:1] == [self.bos_token_id] else 0
        self._around = (around[:lead], around[lead:])

    @staticmethod
    def _sentencepiece(piece: str) -> bytes:
        if m := _BYTE_TOKEN.fullmatch(piece):
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    _UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}

    @classmethod
    def _byte_level(cls, piece: str) -> bytes:
        try:
            return bytes(cls._UNICODE_TO_BYTE[c] for c in piece)
        except KeyError:  # an added, non-special token stored as plain text
            return piece.encode("utf-8")

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out."""
        return self.hf.decode([token]) if token < len(self.hf) else ""

    def holds_special(self, text: str) -> bool:
        return self._specials.holds(text)

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]:
        """Text -> token ids; without `special`, special-token text such as <|im_start|> is plain text."""
        return self.hf(text, add_special_tokens=add_special, split_special_tokens=not special)["input_ids"]

    def encode_parts(self, parts: list[Part], add_special: bool = False) -> list[int]:
        """The token ids of the parts' joined text, special-token text special only in the parts marked so."""
        return self._specials.encode(
            parts, lambda run: self.encode(run, add_special=False, special=False), self._around, add_special
        )

    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces[token_id]

    def decode(self, token_ids: list[int]) -> str:
        return b"".join(self._pieces[t] for t in token_ids).decode("utf-8", errors="replace")
