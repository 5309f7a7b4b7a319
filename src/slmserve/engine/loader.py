"""Settings -> a loaded model with its engine, ready to serve."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from slmserve.engine.engine import Engine
from slmserve.engine.protocols import Runner, Tokenizer
from slmserve.models import weights
from slmserve.models.chat_template import ChatTemplate, HFChatTemplate
from slmserve.models.registry import ModelSource, resolve_model
from slmserve.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    path: Path | None  # None for a hub id
    engine: Engine | None  # None in a cluster's gateway: the model hosts run the engine
    runner: Runner  # or, in a gateway, the vocabulary alone (LlamaCppVocab)
    tokenizer: Tokenizer
    chat_template: ChatTemplate | HFChatTemplate
    max_model_len: int  # the most tokens (prompt + completion) one request may use
    backend: str = "llama.cpp"  # or "torch"
    device: str = "cpu"
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA name -> path; the runner's own dict
    weights: str | None = None  # the weight layout as run, e.g. "q4_0, head q5_0 (requantized from q4_1)"; None: torch

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else self.name

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.runner.close()


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model (the first, when settings list several). Raises FileNotFoundError or ValueError
    with a readable message."""
    start = time.perf_counter()
    settings = settings.per_model()[0]
    source = resolve_model(settings.model, settings.cache_dir)
    backend, runs = choose_backend(settings, source)
    model = _load_llamacpp(settings, runs) if backend == "llama.cpp" else _load_torch(settings, source)
    model.path = source.path  # what the user gave, not the converted file in the cache
    seconds = time.perf_counter() - start
    log.info("loaded %s on %s (%s) in %.2f s", source.name, backend, model.device, seconds)
    return model


def choose_backend(settings: Settings, source: ModelSource) -> tuple[str, ModelSource]:
    """(the engine that serves the model, the source it runs). A local Hugging Face directory goes to llama.cpp as
    a GGUF converted once into the cache (models/convert_hf.py) unless --engine torch; one the converter cannot
    write runs on torch under auto (the log says why) and is a ValueError under --engine llama.cpp."""
    engine = settings.engine
    if source.format == "gguf" or engine == "torch":
        return ("torch" if engine == "torch" else "llama.cpp"), source
    if source.path is None:  # a hub id: transformers downloads it; converting would need the files first
        if engine == "llama.cpp":
            raise ValueError(f"the llama.cpp engine needs a GGUF file or a local directory, not {source.name!r}")
        return "torch", source
    from slmserve.models import convert_hf

    try:
        return "llama.cpp", ModelSource("gguf", convert_hf.cached_gguf(source.path, Path(settings.cache_dir)))
    except (convert_hf.UnsupportedModel, OSError) as exc:
        if engine == "llama.cpp":
            raise ValueError(
                f"the llama.cpp engine needs a GGUF file or a Hugging Face directory it can convert; "
                f"{settings.model!r}: {exc}"
            ) from exc
        log.warning("serving %s on the torch engine: it cannot be converted for llama.cpp (%s)", source.name, exc)
        return "torch", source


def load_adapters(runner: Runner, specs: list[str]) -> None:
    """Load each --lora NAME=PATH into the runner. Raises ValueError naming a bad flag or adapter."""
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--lora takes NAME=PATH, not {spec!r}")
        runner.load_adapter(name, path)


def _open_llamacpp(settings: Settings, path: Path):
    from slmserve.engine.runner_llamacpp import LlamaCppRunner

    return LlamaCppRunner(
        path,
        n_ctx=settings.kv_cells("llama.cpp"),
        n_seq_max=settings.max_running,
        n_batch=settings.step_token_budget,
        n_threads=settings.n_threads,
        kv_unified=settings.kv_unified,
        kv_cache_type=settings.kv_cache_type,
        cache_dir=Path(settings.cache_dir),
        verbose=settings.log_level == "debug",
    )


def _load_weights(settings: Settings, path: Path) -> tuple[object, weights.WeightsPlan]:
    """The runner on the layout --weights asks for. A cached copy that fails to load is made again, once; if that
    fails too, the original file runs, with a warning: never a crash for the cache's sake."""
    layouts = [settings.weights, settings.weights, "original"]
    for attempt, layout in enumerate(layouts):
        plan = weights.plan(path, layout, Path(settings.cache_dir))
        try:
            return _open_llamacpp(settings, plan.path), plan
        except ValueError as exc:
            if not plan.requantized:
                raise
            weights.discard(plan)
            then = "making it again" if attempt == 0 else "running the original weights, slower"
            log.warning("the cached %s failed to load (%s); %s", plan.path.name, exc, then)
    raise AssertionError("unreachable: the original layout either loads or raises")


def _load_llamacpp(settings: Settings, source: ModelSource) -> LoadedModel:
    runner, plan = _load_weights(settings, source.path)
    try:
        load_adapters(runner, settings.lora)
    except ValueError:
        runner.close()
        raise
    log.info("weights: %s from %s (%s)", plan.description, plan.path, plan.reason)
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
    log.info("llama.cpp context %d, %d slots", runner.n_ctx, settings.max_running)
    return LoadedModel(
        settings.model_name,
        source.path,
        engine,
        runner,
        runner.tokenizer,
        _template(runner),
        max_model_len,
        adapters=runner.adapters,
        weights=plan.description,
    )


def _template(runner) -> ChatTemplate:
    """The chat template a GGUF file carries, with its BOS and EOS spelled out."""
    tok = runner.tokenizer
    return ChatTemplate(
        runner.metadata.get("tokenizer.chat_template"),
        bos_token=tok.token_text(tok.bos_token_id) if tok.bos_token_id >= 0 else "",
        eos_token=tok.token_text(tok.eos_token_id) if tok.eos_token_id >= 0 else "",
    )


def load_vocab(settings: Settings, max_model_len: int, weights_description: str | None) -> LoadedModel:
    """The model as a cluster's gateway holds it: tokenizer and chat template, no weights and no engine (the model
    hosts run those and report max_model_len and the weights). GGUF models only, for now. Raises ValueError."""
    from slmserve.models.llamacpp_vocab import LlamaCppVocab

    settings = settings.per_model()[0]
    source = resolve_model(settings.model, settings.cache_dir)
    if source.format != "gguf":
        raise ValueError(f"the cluster serves GGUF models; {settings.model!r} is a Hugging Face model")
    vocab = LlamaCppVocab(source.path)
    return LoadedModel(
        settings.model_name,
        source.path,
        None,
        vocab,
        vocab.tokenizer,
        _template(vocab),
        max_model_len,
        weights=weights_description,
    )


def _load_torch(settings: Settings, source: ModelSource) -> LoadedModel:
    try:
        from slmserve.engine import hf_models
    except ImportError as exc:
        raise ValueError(f"the torch engine needs slmserve[torch] installed ({exc})") from exc
    return hf_models.load(settings, source)
