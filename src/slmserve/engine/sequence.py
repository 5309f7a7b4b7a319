"""All the state of one request inside the engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from slmserve.engine.detokenizer import Detokenizer
from slmserve.engine.sampling import SamplingParams

if TYPE_CHECKING:
    from slmserve.engine.dry import Breakers
    from slmserve.engine.loop_guard import LoopGuard
    from slmserve.engine.sampling import TokenLogprobs
    from slmserve.engine.structured import Constraint


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request's tokens and progress. Tokens [0, num_computed) are in the KV cache of `slot`."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    detokenizer: Detokenizer
    rng: np.random.Generator
    adapter: str | None = None  # the LoRA adapter this request runs with; None: the base model
    constraint: Constraint | None = None  # the grammar its output must match (params.grammar, compiled)
    dry_breakers: Breakers | None = None  # DRY's sequence breakers in this vocabulary's tokens (params.dry_on)
    guard: LoopGuard | None = None  # with a constraint: holds and takes back repeats, tells the close the JSON state
    held_logprobs: list[TokenLogprobs | None] = field(default_factory=list)  # of the tokens the guard holds
    closed: bool = False  # the answer ran into max_tokens and was closed so it parses
    arrival_time: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    slot: int | None = None
    status: Status = Status.WAITING
    finish_reason: str | None = None  # "stop", "length" or "abort"
    first_scheduled_time: float | None = None
    num_preemptions: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to be fed to the model: the prompt (or its rest), or the one token just sampled."""
        return self.num_tokens - self.num_computed

    @property
    def is_prefilling(self) -> bool:
        return self.num_uncomputed > 1 or not self.output_token_ids

    def tokens(self, start: int, length: int) -> list[int]:
        """Tokens [start, start + length) of prompt + output, without joining the two lists (hot path)."""
        n, end = self.num_prompt_tokens, start + length
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]
