"""OpenAI Responses API types: the request, the response object and its output items, the item list.

Sampling extras (top_k, min_p, seed, stop, DRY, loop_guard, ...) are taken as in chat completions and checked there;
fields slmserve has no use for (reasoning, include, truncation, service_tier, ...) are accepted and ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slmserve.server.protocol import limits
from slmserve.server.protocol.openai import MAX_TOKENS_LIMIT, JsonSchemaFormat

ItemStatus = Literal["in_progress", "completed", "incomplete"]


def item_id(prefix: str) -> str:
    """An id as OpenAI writes them: resp_..., msg_..., fc_..."""
    return f"{prefix}_{uuid.uuid4().hex}"


class TextFormat(BaseModel):
    """text.format: text, json_object, or json_schema (its name, schema and strict sit beside the type)."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    def as_json_schema(self) -> JsonSchemaFormat:
        return JsonSchemaFormat(name=self.name, description=self.description, schema=self.schema_, strict=self.strict)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(BaseModel):
    """POST /v1/responses."""

    model_config = ConfigDict(extra="allow")  # sampling extras pass on to chat; unknown fields are ignored

    model: str | None = None
    input: str | Annotated[list[dict[str, Any]], limits.at_most(limits.MAX_MESSAGES, "items")]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: Annotated[list[dict[str, Any]] | None, limits.at_most(limits.MAX_TOOLS, "tools")] = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    store: bool = True
    stream: bool = False
    previous_response_id: str | None = None
    metadata: Annotated[dict[str, str] | None, limits.at_most(16, "entries")] = None
    user: str | None = None

    def extras(self) -> dict[str, Any]:
        """Fields beyond the Responses API's own: the sampling extras chat completions take."""
        return dict(self.model_extra or {})


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: item_id("msg"))
    status: ItemStatus = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str = Field(default_factory=lambda: item_id("fc"))
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"


OutputItem = Annotated[OutputMessage | FunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: str
    message: str


class Response(BaseModel):
    """The response object, as OpenAI documents it (the fields slmserve can fill)."""

    id: str = Field(default_factory=lambda: item_id("resp"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["completed", "failed", "in_progress", "incomplete"] = "in_progress"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = True
    temperature: float = 1.0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float = 1.0
    truncation: Literal["disabled", "auto"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # An extra, as on chat choices: the answer ran into max_output_tokens and the server closed it so it parses.
    closed_at_budget: bool = False


class ItemList(BaseModel):
    """GET /v1/responses/{id}/input_items: a page of the items the response was made from."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class Deleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
