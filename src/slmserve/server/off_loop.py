"""Long text is tokenized in a worker thread: llama.cpp tokenizes ~0.3 ms per 1,000 characters (a 2 MiB prompt
~0.6-1.5 s) and releases the GIL meanwhile, so /health and other requests are not kept waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Below this many characters tokenizing takes ~5 ms: done in place, it costs less than a thread's round trip and
# leaves the worker threads free for the long ones.
OFF_LOOP_CHARS = 16_384


async def off_loop(size: int, work: Callable[[], T]) -> T:
    """work() in place when size (characters to tokenize) is small, else in a worker thread."""
    if size < OFF_LOOP_CHARS:
        return work()
    return await asyncio.to_thread(work)
