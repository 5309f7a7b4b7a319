"""Request and response types of the five seed designs' APIs (see docs/api.md, "Seed APIs")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slmserve.server.protocol import limits
from slmserve.server.protocol.openai import DryFields, Usage


class SamplingExtras(DryFields):
    """Optional sampling fields the seed endpoints accept beside their own (DRY's included)."""

    model_config = ConfigDict(extra="ignore")

    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy, as the seeds' model.generate was.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    model: str | None = Field(
        None,
        description="The first served model (the default) or one of its LoRA adapters; another name is a 404.",
    )


class InferRequest(SamplingExtras):
    """Seed 000's model host: POST /infer."""

    system_prompt: str = ""
    user_prompt: str = Field(min_length=1)
    max_tokens: int = Field(128, ge=1, le=4096, description="New tokens at most (the seed generated 128).")


class InferResponse(BaseModel):
    response: str


class ChatRequest(InferRequest):
    """Seed 000's gateway: POST /chat, and each query of /chat/batched."""

    chat_id: str

    @field_validator("chat_id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class ChatResponse(BaseModel):
    chat_id: str
    response: str
    usage: Usage | None = None


class BatchedRequest(BaseModel):
    # Each query is validated on its own, so one bad query gets its own error instead of failing the batch.
    queries: Annotated[list[dict[str, Any]], limits.at_most(limits.MAX_BATCHED_QUERIES, "queries")] = Field(
        min_length=1
    )


class BatchedResult(BaseModel):
    chat_id: str | None = None
    response: str | None = None
    usage: Usage | None = None
    error: str | None = None
    status: int = 200


class BatchedResponse(BaseModel):
    responses: list[str] = Field(description="The answers in query order, as the seed returned them ('' on error).")
    results: list[BatchedResult] = Field(description="Per query: chat_id, usage, and the error when it failed.")


class SlmLoadRequest(BaseModel):
    """Seed 002: POST /slm/load. With lora_path, load that LoRA adapter (a peft directory, or a GGUF LoRA file on
    llama.cpp)."""

    lora_path: str | None = Field(None, min_length=1)
    lora_name: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[\w.-]+$", description="Defaults to the folder's name."
    )


class SlmUnloadRequest(BaseModel):
    """POST /slm/unload: with lora_name, unload only that adapter; with no body (or `{}`), the whole model."""

    lora_name: str | None = Field(None, min_length=1)


class SlmGenerateRequest(DryFields):
    """Seed 002: POST /slm/generate and /slm/stream (DRY's fields too)."""

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(100, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    do_sample: bool = True
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)


class GenerateRequest(DryFields):
    """Seeds 003 and 004: POST /generate. max_length counts prompt and new tokens together, as HF's pipeline does.
    DRY's fields too."""

    prompt: str = Field(min_length=1, max_length=500)
    max_length: int | None = Field(None, ge=10)
    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int = Field(50, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    do_sample: bool = True
    model: str | None = None


class GenerateResponse(BaseModel):
    success: bool = True
    prompt: str
    generated_text: str = Field(description="The prompt followed by its continuation.")
    model_name: str
    inference_time_seconds: float
    parameters: dict[str, Any]
    metadata: dict[str, Any]
