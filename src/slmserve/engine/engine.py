"""The synchronous engine: add requests, step, abort. Not thread-safe: AsyncEngine owns it from one thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from slmserve.engine.detokenizer import Detokenizer
from slmserve.engine.sampling import SamplingParams, TokenLogprobs, make_rng, sample
from slmserve.engine.scheduler import Batch, Scheduler
from slmserve.engine.sequence import Sequence
from slmserve.engine.structured import Constraint, Grammars, MaskFiller, allowed_tokens


class UnknownAdapterError(LookupError):
    """A request names a LoRA adapter the runner does not hold (unloaded after the request was checked)."""


class Tokenizer(Protocol):
    eog_token_ids: frozenset[int]

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]: ...

    def encode_parts(self, parts: list[tuple[str, bool]], add_special: bool = False) -> list[int]: ...

    def holds_special(self, text: str) -> bool: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def decode(self, token_ids: list[int]) -> str: ...


# One embeddings call takes at most this many inputs and tokens (so one input at most EMBED_TOKENS).
EMBED_TOKENS = 2048
EMBED_SEQS = 64


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


@dataclass
class RequestOutput:
    """What one step produced for one request: deltas, plus the totals so far."""

    request_id: str
    text: str
    token_ids: list[int]
    num_prompt_tokens: int
    num_output_tokens: int
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    queue_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def then(self, later: RequestOutput) -> RequestOutput:
        """This output and a later one of the same request as one: deltas joined, totals and finish the later's."""
        return RequestOutput(
            self.request_id,
            self.text + later.text,
            self.token_ids + later.token_ids,
            later.num_prompt_tokens,
            later.num_output_tokens,
            self.logprobs + later.logprobs,
            later.finish_reason,
            self.queue_time if self.queue_time is not None else later.queue_time,
        )


class Engine:
    def __init__(
        self, runner: Runner, *, max_running: int, max_waiting: int, token_budget: int, kv_capacity: int
    ) -> None:
        self.runner = runner
        self.tokenizer = runner.tokenizer
        self.scheduler = Scheduler(max_running, max_waiting, token_budget, kv_capacity)
        self.requests: dict[str, Sequence] = {}
        self.grammars = Grammars(self.tokenizer)
        self._masks = MaskFiller()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        adapter: str | None = None,
        constraint: Constraint | None = None,
    ) -> None:
        """Queue a request. Raises QueueFullError when the waiting queue is at its limit.

        A request with params.grammar needs its compiled constraint: given (AsyncEngine compiles it off this
        thread), or compiled here (GrammarError when it does not compile).
        """
        if adapter is not None and adapter not in getattr(self.runner, "adapters", {}):
            raise UnknownAdapterError(f"The model '{adapter}' does not exist: its LoRA adapter was unloaded")
        if request_id in self.requests:
            raise ValueError(f"duplicate request id {request_id!r}")
        seq = Sequence(
            request_id,
            list(prompt_token_ids),
            params,
            Detokenizer(self.tokenizer.token_bytes, params.stop),
            make_rng(params.seed),
            adapter,
            constraint or (self.grammars.matcher(params.grammar) if params.grammar else None),
        )
        self.scheduler.add(seq)
        self.requests[request_id] = seq

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its slot; None if it is unknown or already done."""
        seq = self.requests.get(request_id)
        if seq is None:
            return None
        return self._finish(seq, "abort", "", [], [])

    def generate(
        self, prompts: dict[str, list[int]], params: SamplingParams, adapters: dict[str, str | None] | None = None
    ) -> dict[str, list[int]]:
        """Offline use: run these prompts together to the end; the generated token ids by request id."""
        for request_id, prompt_token_ids in prompts.items():
            self.add_request(request_id, prompt_token_ids, params, (adapters or {}).get(request_id))
        tokens: dict[str, list[int]] = {request_id: [] for request_id in prompts}
        while self.has_work:
            for out in self.step():
                tokens[out.request_id].extend(out.token_ids)
        return tokens

    def step(self) -> list[RequestOutput]:
        """One scheduling round: at most one llama_decode, then one new token per sampling sequence."""
        batch = self.scheduler.schedule()
        masks = self._start_masks(batch)
        logits = self.runner.run(batch)
        return self._postprocess(batch, logits, masks)

    def _start_masks(self, batch: Batch):
        """Begin the grammar masks of the constrained sequences that sample this step: (row by seq, future)."""
        seqs = [c.seq for c in batch.chunks if c.seq.constraint is not None and c.needs_logits]
        if not seqs:
            return None
        masks = self._masks.start([s.constraint for s in seqs], self.grammars.vocab_size)
        return {seq: row for row, seq in enumerate(seqs)}, masks

    def close(self) -> None:
        """Stop the mask helper thread (once the engine thread has stopped stepping)."""
        self._masks.close()

    def _postprocess(self, batch: Batch, logits: np.ndarray, masks=None) -> list[RequestOutput]:
        rows, bitmask = (masks[0], masks[1].result()) if masks else ({}, None)
        outputs = []
        for row, chunk in enumerate(self.scheduler.postprocess(batch)):
            mask_row = rows.get(chunk.seq)
            allowed = None if mask_row is None else allowed_tokens(bitmask[mask_row], logits.shape[1])
            outputs.append(self._append_token(chunk.seq, logits[row], allowed))
        return outputs

    def _append_token(self, seq: Sequence, logits: np.ndarray, allowed: np.ndarray | None = None) -> RequestOutput:
        params = seq.params
        if allowed is not None and not allowed.any():  # a dead end in the grammar that compiling did not show
            return self._finish(seq, "stop", seq.detokenizer.flush(), [], [])
        token, lp = sample(logits, params, seq.rng, seq.prompt_token_ids, seq.output_token_ids, allowed)
        seq.output_token_ids.append(token)
        lps = [lp] if lp is not None else []
        if token in params.stop_token_ids or (token in self.tokenizer.eog_token_ids and not params.ignore_eos):
            return self._finish(seq, "stop", seq.detokenizer.flush(), [token], lps)
        text = seq.detokenizer.push(token)
        if seq.detokenizer.stop_reason is not None:
            return self._finish(seq, "stop", text, [token], lps)
        if seq.constraint is not None and self._grammar_done(seq, token):
            return self._finish(seq, "stop", text + seq.detokenizer.flush(), [token], lps)
        if seq.num_output_tokens >= params.max_tokens:
            return self._finish(seq, "length", text + seq.detokenizer.flush(), [token], lps)
        return self._output(seq, text, [token], lps)

    @staticmethod
    def _grammar_done(seq: Sequence, token: int) -> bool:
        """Feed the token to the grammar: True when the grammar is complete, or refused it (then the output so
        far is all the request gets; it cannot happen when the mask was applied)."""
        return not seq.constraint.accept(token) or seq.constraint.finished

    def _finish(
        self, seq: Sequence, reason: str, text: str, tokens: list[int], lps: list[TokenLogprobs]
    ) -> RequestOutput:
        self.scheduler.remove(seq)
        del self.requests[seq.request_id]
        seq.finish_reason = reason
        return self._output(seq, text, tokens, lps)

    @staticmethod
    def _output(seq: Sequence, text: str, tokens: list[int], lps: list[TokenLogprobs]) -> RequestOutput:
        queue_time = None
        if seq.first_scheduled_time is not None and seq.num_output_tokens == 1:
            queue_time = seq.first_scheduled_time - seq.arrival_time
        return RequestOutput(
            seq.request_id,
            text,
            tokens,
            seq.num_prompt_tokens,
            seq.num_output_tokens,
            lps,
            seq.finish_reason,
            queue_time,
        )
