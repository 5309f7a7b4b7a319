"""The boundary serving talks to: what the routes need from an engine, wherever that engine runs.

In one process the client is the AsyncEngine itself (a thread in this process). The cluster plugs in a client
that reaches a model host over a Ray Serve handle. Serving and the routes see only this protocol, so one copy
of them serves both (vLLM's EngineClient between AsyncLLM and its OpenAI layer is the model).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import numpy as np

from slmserve.engine.engine import RequestOutput
from slmserve.engine.sampling import SamplingParams


@runtime_checkable
class EngineClient(Protocol):
    """Generate as an async stream of outputs; closing the stream aborts the request. Counts for admission."""

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def max_waiting(self) -> int: ...

    @property
    def room(self) -> int:
        """Sequences it can take now: free waiting places and running slots; admission refuses past it."""
        ...

    def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """The request's outputs until it finishes, the first an empty one (`accepted`) once an engine has taken
        it; raises QueueFullError when over capacity."""
        ...

    @property
    def embed_len(self) -> int:
        """The most tokens one embeddings input may hold."""
        ...

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        """Mean-pooled, L2-normalized embeddings [N, hidden] of the inputs, in order."""
        ...

    async def check_grammar(self, grammar: str) -> int | None:
        """Compile a grammar against the model's vocabulary; the tokens of its shortest answer (None: none found
        within reach), or GrammarError naming the problem."""
        ...

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter between two steps; ValueError when the files are not an adapter of this model."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Unload an adapter; AdapterInUseError while requests use it."""
        ...

    def shutdown(self) -> None:
        """Stop serving; requests still in flight end with an error."""
        ...
