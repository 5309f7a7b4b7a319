"""A byte-level tokenizer and a scripted runner: the engine without weights."""

from __future__ import annotations

import numpy as np

from slmserve.engine.engine import Engine
from slmserve.engine.scheduler import Batch

EOS = 256
VOCAB = 257


class ByteTokenizer:
    eog_token_ids = frozenset({EOS})
    vocab_size = VOCAB

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else b""

    def decode(self, token_ids: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in token_ids).decode("utf-8", errors="replace")


class ChatTokenizer(ByteTokenizer):
    """The byte tokenizer with what chat prompts need: no special-token text at all."""

    def holds_special(self, text: str) -> bool:
        return False

    def encode_parts(self, parts: list[tuple[str, bool]], add_special: bool = False) -> list[int]:
        return [b for text, _ in parts for b in text.encode("utf-8")]


class ScriptedRunner:
    """Each sequence 'generates' `script` byte by byte, then EOS; uniform=True gives flat logits instead."""

    def __init__(self, script: bytes = b"hello world", uniform: bool = False) -> None:
        self.tokenizer = ByteTokenizer()
        self.script, self.uniform = script, uniform
        self.batches: list[Batch] = []
        self.kv_ops: list = []
        self.embed_calls: list[tuple[int | None, list[int]]] = []  # (start, each list's length) a call
        self.held: list[int] = []  # the tokens of the long input whose pieces are under way (llama.cpp's seq 0)

    embed_len, embed_seqs, embed_chunk = 16, 3, 8  # small bounds, so a few inputs take several calls

    def embed(self, token_lists: list[list[int]], start: int | None = None) -> np.ndarray:
        """[N, 2]: each list's length and sum of its tokens, so tests can see what came back where."""
        assert len(token_lists) <= self.embed_seqs and sum(map(len, token_lists)) <= self.embed_chunk
        self.embed_calls.append((start, [len(t) for t in token_lists]))
        if start is not None:
            # A piece continues the tokens held before it, of the same input (inputs here are [i] * n).
            held = self.held[:start] if start else []
            assert len(held) == start and len(token_lists) == 1 and set(held) <= set(token_lists[0])
            self.held = held + token_lists[0]
        return np.array([[len(t), sum(t)] for t in token_lists], dtype=np.float64)

    def run(self, batch: Batch) -> np.ndarray:
        self.kv_ops.extend(batch.kv_ops)
        self.batches.append(batch)
        rows = []
        for chunk in batch.chunks:
            if not chunk.needs_logits:
                continue
            row = np.zeros(VOCAB, dtype=np.float32)
            if not self.uniform:
                k = chunk.seq.num_output_tokens
                row[self.script[k] if k < len(self.script) else EOS] = 10.0
            rows.append(row)
        return np.array(rows, dtype=np.float32).reshape(len(rows), VOCAB)


class ChatRunner(ScriptedRunner):
    """A scripted runner a server can hold: a chat tokenizer, and a close() for the app's shutdown."""

    def __init__(self, script: bytes = b"hello world", uniform: bool = False) -> None:
        super().__init__(script, uniform)
        self.tokenizer = ChatTokenizer()

    def run(self, batch: Batch) -> np.ndarray:
        # Sharper than the script's 10: a server's requests sample at temperature 1 by default, and a 1% chance
        # of another byte each token would make the HTTP tests flaky.
        return super().run(batch) * 10

    def close(self) -> None:
        pass


def make_engine(runner=None, **kw) -> Engine:
    opts = dict(max_running=4, max_waiting=8, token_budget=64, kv_capacity=1024) | kw
    return Engine(runner or ScriptedRunner(), **opts)


def run_all(engine: Engine, limit: int = 10_000) -> dict[str, str]:
    """Step until idle; the text of every request by id, and the finish reasons under 'reason:<id>'."""
    out: dict[str, str] = {}
    for _ in range(limit):
        if not engine.has_work:
            break
        for o in engine.step():
            out[o.request_id] = out.get(o.request_id, "") + o.text
            if o.finished:
                out[f"reason:{o.request_id}"] = o.finish_reason
    return out
