"""Settings -> a loaded model with its engine, ready to serve."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from slmserve.engine.engine import Engine
from slmserve.engine.runner_llamacpp import LlamaCppRunner, LlamaCppTokenizer
from slmserve.models.chat_template import ChatTemplate
from slmserve.models.registry import resolve_model_path
from slmserve.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    path: Path
    engine: Engine
    runner: LlamaCppRunner
    tokenizer: LlamaCppTokenizer
    chat_template: ChatTemplate
    max_model_len: int  # the most tokens (prompt + completion) one request may use

    def close(self) -> None:
        self.runner.close()


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model. Raises FileNotFoundError or ValueError with a readable message."""
    start = time.perf_counter()
    path = resolve_model_path(settings.model)
    runner = LlamaCppRunner(
        path,
        n_ctx=settings.ctx_size,
        n_seq_max=settings.max_running,
        n_batch=settings.step_token_budget,
        n_threads=settings.n_threads,
        kv_unified=settings.kv_unified,
        kv_cache_type=settings.kv_cache_type,
        verbose=settings.log_level == "debug",
    )
    tok = runner.tokenizer
    # Without a unified KV buffer llama.cpp splits the context evenly between the slots.
    per_seq = runner.n_ctx if settings.kv_unified else runner.n_ctx // settings.max_running
    max_model_len = min(per_seq, runner.n_ctx_train, settings.max_model_len or per_seq)
    engine = Engine(
        runner,
        max_running=settings.max_running,
        max_waiting=settings.max_waiting,
        token_budget=settings.step_token_budget,
        # Split streams hold per_seq cells each and no request exceeds that, so the total is n_ctx either way.
        kv_capacity=runner.n_ctx,
    )
    template = ChatTemplate(
        runner.metadata.get("tokenizer.chat_template"),
        bos_token=tok.token_text(tok.bos_token_id) if tok.bos_token_id >= 0 else "",
        eos_token=tok.token_text(tok.eos_token_id) if tok.eos_token_id >= 0 else "",
    )
    seconds = time.perf_counter() - start
    log.info("loaded %s in %.2f s (context %d, %d slots)", path.name, seconds, runner.n_ctx, settings.max_running)
    return LoadedModel(settings.model_name, path, engine, runner, tok, template, max_model_len)
