"""The synchronous engine: add requests, step, abort. Not thread-safe: AsyncEngine owns it from one thread."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slmserve.engine.detokenizer import Detokenizer
from slmserve.engine.dry import breakers_for
from slmserve.engine.loop_guard import LoopGuard
from slmserve.engine.protocols import Runner
from slmserve.engine.sampling import SamplingParams, TokenLogprobs, make_rng, sample
from slmserve.engine.scheduler import Batch, Scheduler
from slmserve.engine.sequence import Sequence
from slmserve.engine.structured import Constraint, Grammars, MaskFiller, allowed_tokens


class UnknownAdapterError(LookupError):
    """A request names a LoRA adapter the runner does not hold (unloaded after the request was checked)."""


class AdapterInUseError(RuntimeError):
    """An adapter cannot be unloaded while requests run with it."""


# Near the end of its budget a structured answer looks for its close at every token: from this many tokens plus
# twice the last close's length before max_tokens (a close costs ~0.05-0.7 ms; far from the end it is not needed).
CLOSE_WINDOW = 32


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
    closed: bool = False  # a structured answer that ran into max_tokens, closed by the engine so it parses
    stop_reason: str | None = None  # the stop string that ended the answer, if one did (vLLM's name)

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
            later.closed,
            later.stop_reason,
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
            dry_breakers=breakers_for(self.tokenizer, params),
        )
        if seq.constraint is not None:
            calls = frozenset(params.answered_calls)
            seq.guard = LoopGuard(self.grammars.guard_vocab, params.loop_guard, calls)
        self.scheduler.add(seq)
        self.requests[request_id] = seq

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its slot; None if it is unknown or already done."""
        seq = self.requests.get(request_id)
        if seq is None:
            return None
        return self._finish(seq, "abort", "", [], [])

    def unload_adapter(self, name: str) -> None:
        """Unload a LoRA adapter no request uses (its cached prefixes too); AdapterInUseError while some do."""
        users = [s for s in self.requests.values() if s.adapter == name]
        if users:
            raise AdapterInUseError(f"adapter {name!r} is in use by {len(users)} request(s); retry when done")
        self.scheduler.drop_caches(name)
        self.runner.unload_adapter(name)

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
        if allowed is not None and seq.guard is not None:
            seq.guard.ban(allowed)
        if allowed is not None and not allowed.any():  # a dead end in the grammar that compiling did not show
            return self._finish(seq, "stop", *self._release(seq, final=True))
        token, lp = sample(
            logits, params, seq.rng, seq.prompt_token_ids, seq.output_token_ids, allowed, seq.dry_breakers
        )
        seq.output_token_ids.append(token)
        if seq.constraint is not None:
            return self._constrained(seq, token, lp)
        lps = [lp] if lp is not None else []
        if token in params.stop_token_ids or (token in self.tokenizer.eog_token_ids and not params.ignore_eos):
            return self._finish(seq, "stop", seq.detokenizer.flush(), [token], lps)
        text = seq.detokenizer.push(token)
        if seq.detokenizer.stop_reason is not None:
            return self._finish(seq, "stop", text, [token], lps)
        if seq.num_output_tokens >= params.max_tokens:
            return self._finish(seq, "length", text + seq.detokenizer.flush(), [token], lps)
        return self._output(seq, text, [token], lps)

    def _constrained(self, seq: Sequence, token: int, lp: TokenLogprobs | None) -> RequestOutput:
        """A token of a structured answer: the grammar takes it, the loop guard may take it back (text it may
        still take back is held), and near the end of the budget the answer is closed while a close fits."""
        constraint, guard, params = seq.constraint, seq.guard, seq.params
        seq.held_logprobs.append(lp)
        if token in params.stop_token_ids or (token in self.tokenizer.eog_token_ids and not params.ignore_eos):
            guard.push(token, text=False)
            return self._finish(seq, "stop", *self._release(seq, final=True))
        if not constraint.accept(token):  # cannot happen when the mask was applied: the answer so far is all
            seq.output_token_ids.pop()
            seq.held_logprobs.pop()
            return self._finish(seq, "stop", *self._release(seq, final=True))
        back = guard.push(token)
        if back:
            return self._take_back(seq, back)
        if constraint.finished:
            return self._finish(seq, "stop", *self._release(seq, final=True))
        left = params.max_tokens - seq.num_output_tokens
        if params.budget_close and left <= 2 * len(constraint.closing or ()) + CLOSE_WINDOW:
            closing = constraint.close(left, guard.in_string)
            if closing is None or (left == 0 and closing):
                return self._close(seq)  # this token leaves no room to close: close before it
            constraint.keep_closing(closing)
        if left <= 0:
            return self._finish(seq, "length", *self._release(seq, final=True))
        text, tokens, lps = self._release(seq)
        if seq.detokenizer.stop_reason is not None:
            return self._finish(seq, "stop", text, tokens, lps)
        return self._output(seq, text, tokens, lps)

    def _close(self, seq: Sequence) -> RequestOutput:
        """End a structured answer at its budget: its last token taken back, the close found before it added
        (those tokens were never sampled: no logprobs). None found: the answer ends as it is."""
        constraint, guard = seq.constraint, seq.guard
        constraint.rollback(1)
        guard.rollback(1)
        seq.output_token_ids.pop()
        seq.held_logprobs.pop()
        if constraint.closing_at != constraint.num_tokens:  # found at another point: look again
            left = seq.params.max_tokens - seq.num_output_tokens
            constraint.keep_closing(constraint.close(left, guard.in_string))
        if constraint.closing is None or len(constraint.closing) > seq.params.max_tokens - seq.num_output_tokens:
            return self._finish(seq, "length", *self._release(seq, final=True))
        for t in constraint.closing:
            seq.output_token_ids.append(t)
            seq.held_logprobs.append(None)
            guard.push(t)
        seq.closed = True
        return self._finish(seq, "stop", *self._release(seq, final=True))

    def _take_back(self, seq: Sequence, n: int) -> RequestOutput:
        """The loop guard found a repeat: forget the last n tokens (grammar, guard, KV) and sample again where they
        began; the guard now bans what would repeat. Nothing is streamed for this step."""
        seq.constraint.rollback(n)
        seq.guard.rollback(n)
        del seq.output_token_ids[len(seq.output_token_ids) - n :]
        del seq.held_logprobs[len(seq.held_logprobs) - n :]
        self.scheduler.rewind(seq, seq.num_tokens - 1)  # the last kept token is decoded again for its logits
        if seq.params.budget_close:
            left = seq.params.max_tokens - seq.num_output_tokens
            seq.constraint.keep_closing(seq.constraint.close(left, seq.guard.in_string))
        return self._output(seq, "", [], [])

    @staticmethod
    def _release(seq: Sequence, final: bool = False) -> tuple[str, list[int], list[TokenLogprobs]]:
        """The text, tokens and logprobs the loop guard no longer holds (all of them when final)."""
        tokens = seq.guard.release(final)
        held, seq.held_logprobs = seq.held_logprobs[: len(tokens)], seq.held_logprobs[len(tokens) :]
        text = ""
        for t in tokens:
            if t in seq.guard.silent:
                continue
            text += seq.detokenizer.push(t)
        if final:
            text += seq.detokenizer.flush()
        return text, tokens, [lp for lp in held if lp is not None]

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
            seq.closed,
            seq.detokenizer.stop_reason if seq.finish_reason == "stop" else None,
        )
