"""vLLM's runtime LoRA API: POST /v1/load_lora_adapter and /v1/unload_lora_adapter."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$", description="The name requests use.")
    lora_path: str = Field(min_length=1, description="A peft adapter directory, or a GGUF LoRA file (llama.cpp).")


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = Field(None, description="vLLM's numeric id; ignored (names identify adapters here).")
