"""Anthropic Messages API types: the request, the message it answers with, token counts.

Fields slmserve has no use for (thinking, service_tier, container, ...) are accepted and ignored; the sampling
extras chat completions take (min_p, seed, DRY, loop_guard, ...) are taken here too.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slmserve.server.protocol import limits
from slmserve.server.protocol.openai import MAX_TOKENS_LIMIT


def block_id(prefix: str) -> str:
    """An id as Anthropic writes them: msg_..., toolu_..."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(BaseModel):
    """POST /v1/messages/count_tokens: what a message request's prompt is made of."""

    model_config = ConfigDict(extra="allow")  # sampling extras pass on to chat; unknown fields are ignored

    model: str
    messages: Annotated[list[InputMessage], limits.at_most(limits.MAX_MESSAGES, "messages")] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: Annotated[list[dict[str, Any]] | None, limits.at_most(limits.MAX_TOOLS, "tools")] = None
    tool_choice: dict[str, Any] | None = None

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1, le=MAX_TOKENS_LIMIT)
    stop_sequences: Annotated[list[str] | None, limits.stop_strings] = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    metadata: dict[str, Any] | None = None
    stream: bool = False


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    """The answer: content blocks, why it stopped, and the tokens it took."""

    id: str = Field(default_factory=lambda: block_id("msg"))
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int
