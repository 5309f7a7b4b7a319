"""Every knob of slmserve, declared once.

Values come from (highest first) CLI flags, `SLMSERVE_*` environment variables, a `.env` file, and the defaults
below. The CLI builds its flags from these fields, so flags, env vars and `--help` cannot drift apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Default tokens a request may use (prompt + completion) per backend. Measured on llama.cpp at 32 concurrent
# requests: 512, 2048 and 4096 a slot run at the same speed (split streams attend only the cells a slot uses);
# 2048 keeps peak RSS near 1 GiB (docs/PERFORMANCE.md, "Context").
SLOT_TOKENS = {"llama.cpp": 2048, "torch": 512}


def _words(value: object) -> object:
    """A list setting from text: a JSON list, or comma-separated words (`hate,violence`); '' is the empty list."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        return json.loads(value)
    return [w.strip() for w in value.split(",") if w.strip()]


# A list of words that env vars and .env may give as JSON or comma-separated (NoDecode: pydantic-settings would
# otherwise insist on JSON and fail with a traceback on `SLMSERVE_BLOCKED_WORDS=hate,violence`).
Words = Annotated[list[str], NoDecode, BeforeValidator(_words)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLMSERVE_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    model: str = Field(
        "smollm2-135m-instruct",
        description=(
            "A known id (`slmserve models`), a GGUF file, a Hugging Face directory or hub id (owner/name). Several: "
            "give it again or comma-separated; NAME=SOURCE serves one as NAME. The first is the default."
        ),
    )
    engine: Literal["auto", "llama.cpp", "torch"] = Field(
        "auto",
        description=(
            "auto: llama.cpp for GGUF files, torch for Hugging Face models. torch needs slmserve[torch]; on a GGUF "
            "it dequantizes once into --cache-dir."
        ),
    )
    weights: Literal["auto", "original", "q4_0", "q8_0", "iq4_nl", "f16"] = Field(
        "auto",
        description=(
            "llama.cpp: the weight layout. auto requantizes, once into --cache-dir, a file this CPU's fast kernels "
            "skip (the bundled Q4_1 on AVX2); original: the file as it is."
        ),
    )
    device: str = Field("auto", description="torch engine: cpu, cuda, cuda:N; auto picks cuda when available.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="torch engine: weight precision; auto is float32 on CPU, bfloat16 on CUDA."
    )
    lora: Words = Field(
        [],
        description="LoRA adapters to serve, NAME=PATH[,NAME=PATH...]: peft directories (both engines) or GGUF LoRA "
        "files (llama.cpp); requests pick one by model=NAME.",
    )
    cache_dir: str = Field(
        os.path.join(os.path.expanduser("~"), ".cache", "slmserve"),
        description="Where converted weights are kept (requantized GGUFs, GGUFs dequantized for torch).",
    )
    served_model_name: str | None = Field(
        None, description="Name the API reports and accepts for the model; defaults to the model id."
    )
    max_running: int = Field(32, ge=1, le=256, description="Sequences decoded together in one step.")
    max_waiting: int = Field(
        256, ge=1, description="Requests allowed to wait for a slot; past this the API answers 429."
    )
    ctx_size: int | None = Field(
        None,
        ge=256,
        description=(
            "KV cells in all, split evenly between the slots unless --kv-unified. Default: --max-running x 2048 "
            "on llama.cpp, x 512 on torch (its fp32 KV is 4x larger)."
        ),
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + completion one request may use; default min(ctx, trained)."
    )
    step_token_budget: int = Field(
        256,
        ge=16,
        description="Tokens one engine step may run (decodes plus prefill chunks).",
    )
    n_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for llama.cpp and torch."
    )
    kv_unified: bool = Field(
        False,
        description=(
            "One KV buffer for all slots: a request may use the whole context; slower with many requests, and "
            "outputs vary with the batch."
        ),
    )
    kv_cache_type: Literal["f16", "q8_0"] = Field(
        "q8_0",
        description="KV cache precision. q8_0: half the memory; f16: long prompts prefill ~2.5x faster.",
    )
    retry_after: int = Field(1, ge=0, description="Seconds sent in Retry-After with a 429.")
    blocked_words: Words = Field(
        ["hate", "violence"],
        description="Content filter: input holding one of these whole words (any case) is refused (400).",
    )
    max_length_limit: int = Field(200, ge=10, description="/generate: the largest max_length (prompt + new tokens).")
    default_max_length: int = Field(50, ge=10, description="/generate: max_length when the request gives none.")
    default_temperature: float = Field(0.7, ge=0, le=2, description="/generate: temperature when none is given.")
    # DRY, llama.cpp's repetition sampler: the defaults of requests that do not set its fields (docs/api.md, "DRY").
    dry_multiplier: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="DRY: penalty scale for a token extending a verbatim repeat; 0 is off, 0.8 llama.cpp's suggestion.",
    )
    dry_base: float = Field(
        1.75, ge=1, allow_inf_nan=False, description="DRY: the penalty is multiplier x base^(repeat length - allowed)."
    )
    dry_allowed_length: int = Field(2, ge=0, description="DRY: repeats this many tokens long go unpenalized.")
    dry_penalty_last_n: int = Field(
        -1, ge=-1, description="DRY: tokens of context looked back over; -1: all (prompt and output), 0: off."
    )
    # A JSON text default (validated into the list) so --help shows it readably: one breaker is a newline.
    dry_sequence_breakers: Words = Field(
        '["\\n", ":", "\\"", "*"]',
        validate_default=True,
        description="DRY: text a repeat never reaches back across; a JSON list, or comma-separated words.",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text, or json: a JSON object a line, each request's with id, route, status, tokens, latency.",
    )
    api_keys: Words = Field(
        [],
        description=(
            "Keys a client must send (Authorization: Bearer KEY or x-api-key: KEY): KEY or NAME:KEY, "
            "comma-separated. None here or in --api-keys-file: no keys asked."
        ),
        repr=False,  # never in a log line or traceback that prints the settings
    )
    api_keys_file: str | None = Field(None, description="A file of API keys, one a line: KEY or NAME:KEY.")
    metrics_public: bool = Field(False, description="With API keys: serve /metrics without a key.")
    rate_limit_rpm: int | None = Field(
        None, ge=1, description="Requests a minute per API key (per client address without keys)."
    )
    rate_limit_tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens a minute per API key (or address): prompt + max_tokens, the unused part given back.",
    )
    request_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds before a request is aborted (504); clients may ask for less with x-request-timeout.",
    )
    drain_timeout: float = Field(
        30,
        ge=0,
        description="On SIGTERM/SIGINT: seconds requests in flight may take to finish (new ones get 503).",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger is refused with 413."
    )
    max_embed_tokens: int = Field(
        16384,
        ge=1,
        description="Most tokens one /v1/embeddings request may hold over all its inputs (400 past it).",
    )
    state_dir: str = Field(
        os.path.join(os.path.expanduser("~"), ".local", "state", "slmserve"),
        description="Where state that outlives a restart is kept: the Responses API's stored responses.",
    )
    store_url: str | None = Field(
        None,
        description=(
            "A shared store, redis://HOST:PORT/DB: the stored responses every server using it sees (a "
            "cluster's gateway replicas). Unset: a SQLite file under --state-dir."
        ),
    )
    responses_retention_days: float = Field(
        30, gt=0, description="Stored responses older than this are deleted (OpenAI keeps them 30 days)."
    )
    responses_max_mb: float = Field(
        256, gt=0, description="The stored responses' size cap: past it, the oldest are deleted first."
    )

    @field_validator("dry_sequence_breakers")
    @classmethod
    def _breakers_fit(cls, breakers: list[str]) -> list[str]:
        """At startup, not as a 400 on every request: the rule is SamplingParams' (at most 32, 1-40 bytes each)."""
        from slmserve.engine.sampling import SamplingParams  # numpy, only when settings are built

        SamplingParams(dry_sequence_breakers=breakers)
        return breakers

    def kv_cells(self, backend: Literal["llama.cpp", "torch"]) -> int:
        """--ctx-size, or the backend's default tokens a slot times --max-running."""
        return self.ctx_size or self.max_running * SLOT_TOKENS[backend]

    @property
    def model_name(self) -> str:
        """The name the API shows for the (first) model."""
        return self.per_model()[0].served_model_name

    def per_model(self) -> list[Settings]:
        """One Settings per model served, each with one source in `model` and its served name; the first is the
        default. ValueError for an empty list or two models of one name."""
        out: list[Settings] = []
        for i, spec in enumerate(s.strip() for s in self.model.split(",")):
            name, sep, source = spec.partition("=")
            if not sep:
                name, source = "", spec
            if not source:
                raise ValueError(f"--model {spec!r} names no model")
            name = name or (self.served_model_name if i == 0 else None)
            name = name or os.path.basename(source.rstrip("/")).removesuffix(".gguf")
            if any(o.served_model_name == name for o in out):
                raise ValueError(f"two models are served as {name!r}: give one another name with --model NAME=SOURCE")
            out.append(self.model_copy(update={"model": source, "served_model_name": name}))
        return out


@dataclass
class FinetuneConfig:
    """A LoRA fine-tuning run (`slmserve finetune`, finetune.py); the command's defaults are these."""

    data: Path
    output: Path
    model: str = "smollm2-135m-instruct"
    epochs: float = 3.0
    lr: float = 1e-3
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str = "all-linear"
    batch_size: int = 8
    max_length: int = 256
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    resume: bool = True
