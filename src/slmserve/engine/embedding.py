"""Embeddings on the generating engine: inputs sent to the runner between steps, in calls within its bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

# One embeddings call takes at most this many inputs and tokens (so one input at most EMBED_TOKENS).
EMBED_TOKENS = 2048
EMBED_SEQS = 64


class Embedder:
    """Packs embeddings inputs into runner calls. `call` runs a function on the engine thread between two steps
    (AsyncEngine.call)."""

    def __init__(self, runner, call: Callable[[Callable[[], Any]], Awaitable[Any]]) -> None:
        self.runner = runner
        self.call = call
        self._long = asyncio.Lock()

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        """Mean-pooled, L2-normalized final hidden states [N, hidden] of the inputs. They go to the runner in calls
        within its bounds, run between two steps: short inputs packed together, a long one in pieces of a call
        each, so no call holds the engine thread much longer than a step's prefill does."""
        runner, call = self.runner, self.call
        if any(not 0 < len(tokens) <= runner.embed_len for tokens in token_lists):
            raise ValueError(f"each input must hold 1 to {runner.embed_len} tokens")
        chunk = runner.embed_chunk
        sums: list[np.ndarray] = []  # each input's sum of hidden states, in order
        group: list[list[int]] = []

        async def send_group() -> None:
            if group:
                sums.extend(await call(lambda g=list(group): runner.embed(g)))
                group.clear()

        for tokens in token_lists:
            if len(tokens) > chunk:
                await send_group()
                async with self._long:  # the runner holds one long input's earlier pieces at a time
                    cuts = [(tokens[s : s + chunk], s) for s in range(0, len(tokens), chunk)]
                    pieces = [await call(lambda cut=cut: runner.embed([cut[0]], cut[1])) for cut in cuts]
                sums.append(np.sum([piece[0] for piece in pieces], axis=0))
                continue
            if len(group) == runner.embed_seqs or sum(map(len, group)) + len(tokens) > chunk:
                await send_group()
            group.append(tokens)
        await send_group()
        means = np.stack(sums) / np.array([len(t) for t in token_lists], dtype=np.float64)[:, None]
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
