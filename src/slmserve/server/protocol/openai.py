"""OpenAI API request and response types (the subset slmserve serves, plus vLLM-style sampling extras)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slmserve.engine import dry
from slmserve.server.protocol import limits

# Generous, but keeps a typo like 1e12 from being accepted and then failing later.
MAX_TOKENS_LIMIT = 1_000_000


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # the output always matches the schema; strict or not makes no difference here


class ResponseFormat(BaseModel):
    """OpenAI's response_format, plus two extras: {"type": "regex", "regex": ...} and {"type": "lark", "lark": ...}."""

    type: Literal["text", "json_object", "json_schema", "regex", "lark"]
    json_schema: JsonSchemaFormat | None = None
    regex: str | None = None
    lark: str | None = None

    @model_validator(mode="after")
    def _has_its_value(self) -> ResponseFormat:
        if self.type in ("json_schema", "regex", "lark") and getattr(self, self.type) is None:
            raise ValueError(f"response_format of type {self.type!r} needs the field {self.type!r}")
        return self


class DryFields(BaseModel):
    """DRY, llama.cpp's repetition sampler, by its names; a field left out takes the server's default (--dry-*)."""

    # The penalty's scale: 0 is off; 0.8 is llama.cpp's suggested value.
    dry_multiplier: float | None = Field(None, ge=0)
    # How fast the penalty grows with each token the repeat is longer.
    dry_base: float | None = Field(None, ge=1)
    # Repeats this long go unpenalized.
    dry_allowed_length: int | None = Field(None, ge=0)
    # Tokens of the context looked back over: -1 all (prompt and output), 0 none (off).
    dry_penalty_last_n: int | None = Field(None, ge=-1)
    # Text that ends a repeat: a match never reaches back across one.
    dry_sequence_breakers: Annotated[list[str] | None, Field(min_length=1, max_length=dry.MAX_BREAKERS)] = None

    def dry_params(self) -> dict[str, Any]:
        """The DRY fields as SamplingParams' keywords (None: the server's default, filled in by Serving)."""
        return {name: getattr(self, name) for name in DryFields.model_fields}


class SamplingFields(DryFields):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Annotated[str | list[str] | None, limits.stop_strings] = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: Annotated[dict[str, float] | None, limits.at_most(limits.MAX_LOGIT_BIAS, "entries")] = None
    seed: int | None = None
    user: str | None = None
    # Extras, as vLLM and llama.cpp's server accept them.
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    ignore_eos: bool = False
    response_format: ResponseFormat | None = None
    # With response_format or tools: a value the model keeps repeating is taken back and banned.
    loop_guard: bool = True
    # With response_format or tools: an answer about to run into max_tokens is closed so that it still parses.
    budget_close: bool = True

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema for the arguments; None: no arguments
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionName


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], limits.at_most(limits.MAX_MESSAGES, "messages")] = Field(min_length=1)
    tools: Annotated[list[Tool] | None, limits.at_most(limits.MAX_TOOLS, "tools")] = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _merge_max_tokens(self) -> ChatCompletionRequest:
        self.max_tokens = self.max_completion_tokens or self.max_tokens
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS_LIMIT)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    # An extra: the answer ran into max_tokens and the server closed it so it parses (finish_reason "stop").
    closed_at_budget: bool = False
    stop_reason: str | None = None  # vLLM's extra: the stop string that ended the answer, if one did


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    closed_at_budget: bool | None = None  # on the last chunk: as in ChatChoice
    stop_reason: str | None = None  # on the last chunk: as in ChatChoice


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    # An extra: the answer ran into max_tokens and the server closed it so it parses (finish_reason "stop").
    closed_at_budget: bool | None = None  # set on the last chunk streamed


class Completion(BaseModel):
    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "slmserve"
    parent: str | None = None  # for a LoRA adapter: the base model it runs on (as vLLM reports it)
    max_model_len: int | None = None
    weights: str | None = None  # the layout as run (llama.cpp), e.g. "q4_0, head q5_0 (requantized from q4_1)"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
