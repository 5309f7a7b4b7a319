"""Request and response types of /v1/embeddings (OpenAI's shape) and /tokenize, /detokenize (vLLM's shapes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slmserve.server.protocol import limits
from slmserve.server.protocol.openai import ChatMessage, Tool

# OpenAI's own bound on the inputs of one embeddings request.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    # A string, strings, token ids, or lists of token ids: one embedding per string or list.
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EmbeddingRequest:
        inputs = [self.input] if isinstance(self.input, str) else self.input
        if not inputs or len(inputs) > MAX_INPUTS:
            raise ValueError(f"input must hold 1 to {MAX_INPUTS} items")
        if isinstance(self.input, list) and isinstance(self.input[0], int):
            return self
        if any(len(item) == 0 for item in inputs):
            raise ValueError("input may not hold an empty string or an empty list of tokens")
        return self

    @property
    def items(self) -> list[str] | list[list[int]]:
        """The inputs as a list, one item per embedding."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [self.input]
        return self.input


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # a base64 string of little-endian float32 with encoding_format "base64"
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a `prompt`, or chat `messages` rendered by the model's template first."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage] | None, limits.at_most(limits.MAX_MESSAGES, "messages")] = Field(
        None, min_length=1
    )
    tools: Annotated[list[Tool] | None, limits.at_most(limits.MAX_TOOLS, "tools")] = None
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None  # default: True for a prompt; False for messages (the template adds)
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: Annotated[list[int], limits.at_most(limits.MAX_DETOKENIZE, "tokens")]


class DetokenizeResponse(BaseModel):
    prompt: str
