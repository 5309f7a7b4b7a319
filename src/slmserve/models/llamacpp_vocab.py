"""A GGUF model's tokenizer and vocabulary through llama.cpp: what the engine's llama.cpp runner tokenizes with,
and what a cluster's gateway loads alone (vocab_only, a few MB) to tokenize prompts and render chat templates
without the weights."""

from __future__ import annotations

import ctypes
import weakref
from pathlib import Path

import llama_cpp as C

from slmserve.models.special_text import Part, SpecialTextError, SpecialTexts


class ModelWeights:
    """A loaded llama.cpp model, freed when its last holder lets go: the runner, and the tokenizer, whose vocabulary
    lives inside the model. A request that took the tokenizer before an unload may still tokenize with it after;
    freeing the model under it crashed the process in libllama (issue #15), so the free waits for the tokenizer."""

    def __init__(self, path: Path, params) -> None:
        self.ptr = C.llama_model_load_from_file(str(path).encode(), params)
        # finalize holds the pointer, not self: it runs once nothing refers to this object (or at exit).
        self.freed = weakref.finalize(self, C.llama_model_free, self.ptr) if self.ptr else None


class LlamaCppTokenizer:
    """Tokenizer of a loaded GGUF model, each token's bytes cached for the detokenizer's hot path."""

    def __init__(self, weights: ModelWeights) -> None:
        self._weights = weights  # keeps the model, and so the vocabulary, alive as long as this tokenizer
        model = weights.ptr
        self._vocab = C.llama_model_get_vocab(model)
        self.vocab_size = C.llama_vocab_n_tokens(self._vocab)
        self.bos_token_id = C.llama_vocab_bos(self._vocab)
        self.eos_token_id = C.llama_vocab_eos(self._vocab)
        self.eog_token_ids = frozenset(t for t in range(self.vocab_size) if C.llama_vocab_is_eog(self._vocab, t))
        self._specials = self._special_texts()
        # BPE and SentencePiece tokenize each plain run on its own, as llama.cpp does between special tokens (a
        # SentencePiece run after a special token gets its space prefix from the call, as there). Other types
        # (WordPiece, Unigram, RWKV) go to llama.cpp whole.
        self._runs = C.llama_vocab_type(self._vocab) in (C.LLAMA_VOCAB_TYPE_BPE, C.LLAMA_VOCAB_TYPE_SPM)
        self._around = (
            [self.bos_token_id] if C.llama_vocab_get_add_bos(self._vocab) else [],
            [self.eos_token_id] if C.llama_vocab_get_add_eos(self._vocab) else [],
        )
        # Each token's bytes, made on first use: all 49,152 up front cost 0.1 s of every start.
        self._pieces: list[bytes | None] = [None] * self.vocab_size

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out (for chat templates and logprobs)."""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _special_texts(self) -> SpecialTexts:
        """The tokens llama.cpp parses from text only when asked to (control and unknown), by their text."""
        ids: dict[str, int] = {}
        lstrip, rstrip = [], []
        for token in range(self.vocab_size):
            attr = C.llama_vocab_get_attr(self._vocab, token)
            if not attr & (C.LLAMA_TOKEN_ATTR_CONTROL | C.LLAMA_TOKEN_ATTR_UNKNOWN):
                continue
            ids.setdefault(C.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace"), token)
            if attr & C.LLAMA_TOKEN_ATTR_LSTRIP:
                lstrip.append(token)
            if attr & C.LLAMA_TOKEN_ATTR_RSTRIP:
                rstrip.append(token)
        return SpecialTexts(ids, lstrip, rstrip)

    def holds_special(self, text: str) -> bool:
        return self._specials.holds(text)

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]:
        """Text -> token ids. With `special`, special-token text such as <|im_start|> is the special token (as
        llama.cpp's parse_special, but linear in their count); without it, plain text."""
        return self.encode_parts([(text, special)], add_special)

    def encode_parts(self, parts: list[Part], add_special: bool = False) -> list[int]:
        """The token ids of the parts' joined text, special-token text special only in the parts marked so. With
        no such text in the other parts, the ids are llama.cpp's own for the joined text."""
        if not self._runs:
            text = "".join(t for t, _ in parts)
            # One llama.cpp call parses special tokens everywhere or nowhere: right for parts all of one kind,
            # and for mixed parts only when the plain ones hold no special-token text.
            marked = {special for _, special in parts}
            if len(marked) == 2 and any(self.holds_special(t) for t, special in parts if not special):
                raise SpecialTextError("special-token text in user text, which this vocabulary cannot keep plain")
            return self._tokenize(text, add_special, parse_special=True in marked)
        return self._specials.encode(
            parts, lambda run: self._tokenize(run, False, parse_special=False), self._around, add_special
        )

    def _tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        buf = (C.llama_token * (len(data) + 2))()
        n = C.llama_tokenize(self._vocab, data, len(data), buf, len(buf), add_special, parse_special)
        if n < 0:
            buf = (C.llama_token * -n)()
            n = C.llama_tokenize(self._vocab, data, len(data), buf, len(buf), add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces[token_id]
        if piece is None:  # two threads may both make it: the same bytes either way
            piece = self._pieces[token_id] = self._piece(token_id, special=False)
        return piece

    def decode(self, token_ids: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in token_ids).decode("utf-8", errors="replace")


def read_metadata(model: C.llama_model_p) -> dict[str, str]:
    """A GGUF model's metadata: key -> value as text."""
    meta = {}
    buf = ctypes.create_string_buffer(1 << 20)  # chat templates can be long
    for i in range(C.llama_model_meta_count(model)):
        n = C.llama_model_meta_key_by_index(model, i, buf, len(buf))
        key = buf.value[:n].decode("utf-8", errors="replace")
        n = C.llama_model_meta_val_str_by_index(model, i, buf, len(buf))
        meta[key] = buf.value[:n].decode("utf-8", errors="replace")
    return meta


class LlamaCppVocab:
    """A GGUF file's vocabulary and metadata without its weights (llama.cpp's vocab_only load, a few MB): what a
    cluster's gateway needs to tokenize prompts and render chat templates while model hosts hold the weights."""

    def __init__(self, model_path: Path) -> None:
        C.llama_backend_init()
        params = C.llama_model_default_params()
        params.vocab_only = True
        weights = ModelWeights(model_path, params)
        if not weights.ptr:
            raise ValueError(f"llama.cpp could not read the vocabulary of {model_path}")
        self.tokenizer = LlamaCppTokenizer(weights)
        self.n_ctx_train = C.llama_model_n_ctx_train(weights.ptr)
        self.metadata = read_metadata(weights.ptr)

    def close(self) -> None:
        """Nothing to free here: the vocabulary goes with the tokenizer's last user."""
