"""What the engine needs of a model backend: a tokenizer and a runner (runner_llamacpp.py, runner_torch.py)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from slmserve.engine.scheduler import Batch


class Tokenizer(Protocol):
    eog_token_ids: frozenset[int]

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]: ...

    def encode_parts(self, parts: list[tuple[str, bool]], add_special: bool = False) -> list[int]: ...

    def holds_special(self, text: str) -> bool: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def decode(self, token_ids: list[int]) -> str: ...


class Runner(Protocol):
    """A model backend: turns a scheduled batch into logits."""

    tokenizer: Tokenizer
    embed_len: int  # the most tokens of one embeddings input
    embed_seqs: int  # the most inputs of one embeddings call
    # The most tokens of one embeddings call. Below embed_len, a longer input goes in pieces of this size, one call
    # each, so it shares the engine thread with generation steps instead of stalling them.
    embed_chunk: int

    def run(self, batch: Batch) -> np.ndarray:
        """Apply batch.kv_ops in order, decode the chunks; logits [N, V], a row per chunk with needs_logits."""
        ...

    def embed(self, token_lists: list[list[int]], start: int | None = None) -> np.ndarray:
        """Sums of the final hidden states [N, hidden] over each list's tokens; never touches the KV slots. Whole
        inputs, or (start given) one list: a piece of a longer input, its tokens before start held from the calls
        before (begun with start 0)."""
        ...
