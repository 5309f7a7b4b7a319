"""From an API request to engine calls and back: prompt building, validation, choices, usage, logprobs.

Routes stay thin: they hand a parsed request here and get a response object or an SSE stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from slmserve.engine.engine import RequestOutput
from slmserve.engine.loader import LoadedModel
from slmserve.engine.sampling import DRY_FIELDS, SamplingParams, TokenLogprobs
from slmserve.engine.structured import GrammarError, grammar_from
from slmserve.models.chat_template import chat_prompt_ids, text_of
from slmserve.models.special_text import SpecialTextError
from slmserve.server import errors, rate_limits
from slmserve.server.content_filter import ContentFilter
from slmserve.server.engine_client import EngineClient
from slmserve.server.metrics import Metrics
from slmserve.server.middleware.record import current_record
from slmserve.server.off_loop import off_loop
from slmserve.server.protocol import openai as oa
from slmserve.server.streams import merge
from slmserve.server.tools import NO_CALLS, ToolUse
from slmserve.settings import Settings

NO_CALLS_GRAMMAR = grammar_from("lark", NO_CALLS)
# The loop guard's DRY strength (llama.cpp's suggested multiplier), unless the request or the server sets DRY.
GUARD_DRY_MULTIPLIER = 0.8
# A grammar that takes longer than this to check is refused (llguidance's fuel limits bound it as well).
GRAMMAR_CHECK_SECONDS = 2.0


@dataclass
class Structure:
    """What a structured answer must follow: the grammar, the request field that asked for it, the tokens of its
    smallest answer (None: unknown), whether the loop guard watches it (JSON), and the calls already answered."""

    grammar: str
    param: str
    smallest: int | None = None
    guarded: bool = True
    answered_calls: list[str] = field(default_factory=list)


@dataclass
class Choice:
    """One finished (or running) completion choice, accumulated from engine outputs."""

    index: int
    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    closed: bool = False  # closed at max_tokens so it parses
    stop_reason: str | None = None  # the stop string that ended it, if one did

    def add(self, out: RequestOutput) -> None:
        self.text += out.text
        self.num_tokens = out.num_output_tokens
        self.logprobs.extend(out.logprobs)
        self.finish_reason = out.finish_reason
        self.closed = out.closed
        self.stop_reason = out.stop_reason


class Serving:
    """Turns API requests into engine requests for one loaded model."""

    def __init__(
        self,
        model: LoadedModel,
        engine: EngineClient,
        metrics: Metrics,
        settings: Settings,
        content_filter: ContentFilter,
    ) -> None:
        self.model = model
        self.engine = engine
        self.metrics = metrics
        self.settings = settings
        self.retry_after = settings.retry_after
        self.content_filter = content_filter

    def check_content(self, *texts: str | None) -> None:
        """400 when user input holds a blocked word."""
        if self.content_filter.blocks(*texts):
            raise errors.blocked_content()

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None, add_special: bool = False) -> list[int]:
        """A chat prompt's token ids, special-token text in the messages kept plain (400 where it cannot be)."""
        try:
            return chat_prompt_ids(self.model.chat_template, self.model.tokenizer, messages, tools, add_special)
        except SpecialTextError as exc:
            raise errors.APIError(400, str(exc), param="messages") from exc

    async def chat_prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """chat_ids once the content filter has passed the messages; a long prompt off the event loop."""
        texts = [text_of(m.get("content")) for m in messages]

        def work() -> list[int]:
            self.check_content(*texts)
            return self.chat_ids(messages, tools)

        return await off_loop(sum(map(len, texts)), work)

    def check_model(self, name: str | None) -> str | None:
        """The LoRA adapter a request's `model` names, None for the base model; 404 for an unknown name."""
        if name is None or name == self.model.name:
            return None
        if name in self.model.adapters:
            return name
        raise errors.model_not_found(name, [self.model.name, *self.model.adapters])

    def sampling_params(
        self, req: oa.SamplingFields, prompt_len: int, logprobs: int | None, structure: Structure | None = None
    ) -> SamplingParams:
        """An OpenAI request's sampling fields, checked; raises APIError (400) naming the problem, or a max_tokens
        too small for the structure's smallest answer (when the budget close is on)."""
        try:
            bias = {int(k): float(v) for k, v in (req.logit_bias or {}).items()}
        except ValueError as exc:
            raise errors.APIError(400, "logit_bias keys must be token ids", param="logit_bias") from exc
        if any(not 0 <= k < self.model.tokenizer.vocab_size for k in bias):
            raise errors.APIError(400, "logit_bias names a token id outside the vocabulary", param="logit_bias")
        params = self.build_params(
            prompt_len,
            req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            min_p=req.min_p,
            repetition_penalty=req.repetition_penalty,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            logit_bias={k: max(-100.0, min(100.0, v)) for k, v in bias.items()},
            seed=req.seed,
            stop=req.stop_list,
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            grammar=structure.grammar if structure else None,
            loop_guard=req.loop_guard and structure is not None and structure.guarded,
            budget_close=req.budget_close,
            **req.dry_params(),
        )
        if structure is None:
            return params
        if params.budget_close and structure.smallest is not None and params.max_tokens < structure.smallest:
            raise errors.budget_too_small(params.max_tokens, structure.smallest, structure.param)
        params.answered_calls = structure.answered_calls
        if params.loop_guard and req.dry_multiplier is None and not params.dry_on:
            # Loops inside a string ("The export button does nothing. The export button does nothing. ...") are
            # the guard's too: DRY over the answer alone (its breakers include '"' and ':', so a repeat never
            # reaches across a JSON string's bounds; the prompt is left out, so extracting from it is free).
            params.dry_multiplier, params.dry_answer_only = GUARD_DRY_MULTIPLIER, True
        return params

    def build_params(self, prompt_len: int, max_tokens: int | None, **fields) -> SamplingParams:
        """SamplingParams for a prompt of prompt_len tokens; None max_tokens means the rest of the context. DRY
        fields not given (or None) take the server's settings.

        Raises APIError(400): context_length_exceeded when prompt + max_tokens does not fit, or a bad value.
        """
        limit = self.model.max_model_len
        max_tokens = max_tokens if max_tokens is not None else limit - prompt_len
        if prompt_len >= limit or prompt_len + max_tokens > limit:
            raise errors.context_too_long(prompt_len, max_tokens, limit)
        for name in DRY_FIELDS:
            if fields.get(name) is None:
                fields[name] = getattr(self.settings, name)
        try:
            return SamplingParams(max_tokens=max_tokens, **fields)
        except ValueError as exc:
            raise errors.APIError(400, str(exc)) from exc

    async def structure(
        self, fmt: oa.ResponseFormat | None, tool_use: ToolUse | None = None, history_calls: bool = False
    ) -> Structure | None:
        """The grammar the tools or the response_format ask for (None: free text); 400 naming the problem when it
        does not compile, before the request is admitted. history_calls: the conversation holds tool calls but
        this request offers none, so the answer may not write a call's tags."""
        if tool_use is None and (fmt is None or fmt.type == "text"):
            if not history_calls:
                return None
            return Structure(NO_CALLS_GRAMMAR, "messages", guarded=False)
        param = "tools" if tool_use else "response_format"
        try:
            if tool_use:
                grammar = tool_use.grammar()
            else:
                value = fmt.json_schema.schema_ if fmt.type == "json_schema" else getattr(fmt, fmt.type, None)
                grammar = grammar_from(fmt.type, value)
            # Compiled here against the model's vocabulary (some faults, minimum > maximum, show only then), so the
            # answer is a 400 before any stream starts; the engine compiles each choice's own matcher (~1 ms).
            smallest = await asyncio.wait_for(self.engine.check_grammar(grammar), GRAMMAR_CHECK_SECONDS)
        except GrammarError as exc:
            raise errors.invalid_grammar(str(exc), param) from exc
        except asyncio.TimeoutError as exc:
            reason = f"it took over {GRAMMAR_CHECK_SECONDS:g} s to compile; simplify it"
            raise errors.invalid_grammar(reason, param) from exc
        # The loop guard reads JSON: not a regex's or a Lark grammar's text.
        guarded = tool_use is not None or fmt.type in ("json_schema", "json_object")
        answered = tool_use.answered if tool_use is not None and tool_use.choice == "auto" else []
        return Structure(grammar, param, smallest, guarded, answered)

    def admit(self, n: int) -> None:
        """Refuse up front when the engine has no room for n more sequences now: a 429 to retry later, or a 400
        when n alone is more than the queue holds (a retry could never succeed)."""
        if n > self.engine.max_waiting:
            raise errors.APIError(
                400,
                f"This request asks for {n} sequences (prompts x n) at once; the server queues at most "
                f"{self.engine.max_waiting}. Split it into smaller requests.",
                param="n",
            )
        if n > self.engine.room:
            self.metrics.rejected.inc()
            raise errors.queue_full(self.retry_after)

    def stream_choices(
        self, prompt_ids: list[int], params: SamplingParams, n: int, adapter: str | None = None
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Outputs of n choices of one prompt, interleaved as they come: (choice index, output)."""
        self.admit(n)
        base = uuid.uuid4().hex
        streams = [
            self.metrics.observe(
                self.engine.generate(prompt_ids, self._for_choice(params, i), f"{base}-{i}", adapter=adapter)
            )
            for i in range(n)
        ]
        return _accounted(merge(streams), len(prompt_ids), n, len(prompt_ids) + n * params.max_tokens)

    @staticmethod
    def _for_choice(params: SamplingParams, i: int) -> SamplingParams:
        """Choices of one seeded request differ from each other but are each reproducible."""
        if i == 0 or params.seed is None:
            return params
        return dataclasses.replace(params, seed=params.seed + i)

    async def collect(
        self, prompt_ids: list[int], params: SamplingParams, n: int, adapter: str | None = None
    ) -> list[Choice]:
        choices = [Choice(i) for i in range(n)]
        async for i, out in self.stream_choices(prompt_ids, params, n, adapter):
            choices[i].add(out)
        return choices


async def _accounted(
    stream: AsyncIterator[tuple[int, RequestOutput]], prompt_len: int, n: int, most: int
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The stream, aborted with a 504 once the HTTP request's deadline passes. Awaited first, it takes the `most`
    tokens the request may use from the key's tokens-a-minute bucket (429 when it holds too few); when it ends,
    its tokens go on the request's record (for the log) and settle that reservation; a request the engine never
    took costs nothing."""
    record = current_record()
    produced = [0] * n
    accepted = False
    try:
        reservation = await rate_limits.reserve_tokens(most)  # on the first item: a 429 is still an HTTP error
    except BaseException:
        await stream.aclose()
        raise
    try:
        while True:
            deadline = asyncio.timeout(record.remaining() if record else None)
            try:
                async with deadline:
                    i, out = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise errors.timed_out(record.timeout) from None
            accepted = True
            produced[i] = out.num_output_tokens
            yield i, out
    finally:
        await stream.aclose()
        used = prompt_len + sum(produced) if accepted else 0
        await reservation.settle(used)
        if record is not None and accepted:
            record.prompt_tokens += prompt_len
            record.completion_tokens += sum(produced)


def usage(prompt_tokens: int, choices: list[Choice]) -> oa.Usage:
    completion = sum(c.num_tokens for c in choices)
    return oa.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)


def now() -> int:
    return int(time.time())
