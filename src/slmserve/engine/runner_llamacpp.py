"""The llama.cpp backend: one context, one sequence id per slot, one llama_decode per engine step (one per LoRA
adapter in the step, when requests of several adapters share it)."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp as C
import numpy as np
from llama_cpp import _logger as llama_logger

from slmserve.engine.embedding import EMBED_SEQS, EMBED_TOKENS
from slmserve.engine.scheduler import Batch, Chunk, Copy
from slmserve.models.llamacpp_vocab import LlamaCppTokenizer, ModelWeights, read_metadata
from slmserve.models.lora_gguf import adapter_gguf

log = logging.getLogger(__name__)

_KV_TYPES = {"f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0}


class LlamaCppRunner:
    """Owns the llama.cpp model and context. Used from the engine thread only."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        n_seq_max: int,
        n_batch: int,
        n_threads: int,
        kv_unified: bool = False,
        kv_cache_type: str = "f16",
        cache_dir: Path = Path("~/.cache/slmserve"),
        verbose: bool = False,
    ) -> None:
        llama_logger.set_verbose(verbose)
        C.llama_backend_init()
        self.model_path, self._cache_dir = model_path, cache_dir
        self._weights = ModelWeights(model_path, C.llama_model_default_params())
        self.model = self._weights.ptr
        if not self.model:
            raise ValueError(f"llama.cpp could not load {model_path}")
        self.tokenizer = LlamaCppTokenizer(self._weights)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)
        self.metadata = read_metadata(self.model)
        # No request can use more than the trained context, so no slot is given more KV than that; llama.cpp
        # rounds each split stream up to a multiple of 256 cells, which we do here so n_ctx says what is held.
        if kv_unified:
            n_ctx = min(n_ctx, self.n_ctx_train)
        else:
            per_slot = min(-(-n_ctx // n_seq_max), self.n_ctx_train)
            n_ctx = n_seq_max * -(-per_slot // 256) * 256
        params = C.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_seq_max, params.kv_unified = n_seq_max, kv_unified
        params.type_k = params.type_v = _KV_TYPES[kv_cache_type]
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, params)
        if not self.ctx:
            self._weights.freed()
            raise ValueError(f"llama.cpp could not create a context (n_ctx={n_ctx}, n_seq_max={n_seq_max})")
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self._memory = C.llama_get_memory(self.ctx)
        self._init_batch(n_batch)
        self._n_threads = n_threads
        self.embed_len = min(EMBED_TOKENS, self.n_ctx_train)
        self.embed_chunk = min(n_batch, self.embed_len)  # a call of embeddings costs the thread a step's prefill
        self.embed_seqs = min(EMBED_SEQS, self.embed_chunk - 1)  # llama.cpp: sequences (ours + 1) <= batch
        self._embed_ctx = None  # made on the first embeddings request: most servers never get one
        self.adapters: dict[str, str] = {}  # LoRA name -> the path it was loaded from
        self._loras: dict[str, C.llama_adapter_lora_p] = {}
        self._active: str | None = None  # the adapter the context applies now; None: the base model

    def _init_batch(self, n: int) -> None:
        # The batch's arrays are numpy-owned so a step fills them with slices, not per-token ctypes calls.
        self._tokens = np.zeros(n, dtype=np.int32)
        self._pos = np.zeros(n, dtype=np.int32)
        self._n_seq_id = np.ones(n, dtype=np.int32)
        self._seq_ids = np.zeros(n, dtype=np.int32)
        self._logits = np.zeros(n, dtype=np.int8)
        int_p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq_ids.ctypes.data
        self._seq_id_ptrs = (int_p * n)(*[ctypes.cast(base + 4 * i, int_p) for i in range(n)])
        self._batch = C.llama_batch()
        self._batch.token = self._tokens.ctypes.data_as(ctypes.POINTER(C.llama_token))
        self._batch.pos = self._pos.ctypes.data_as(ctypes.POINTER(C.llama_pos))
        self._batch.n_seq_id = self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self._batch.seq_id = self._seq_id_ptrs
        self._batch.logits = self._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def prepare_adapter(self, path: str) -> Path:
        """The GGUF LoRA file for a peft adapter directory (converted once into the cache) or a GGUF LoRA file.
        Touches no llama.cpp state, so it may run on any thread. ValueError if it is no adapter of this model."""
        source = Path(path).expanduser()
        return source if source.is_file() else adapter_gguf(source, self.model_path, self._cache_dir)

    def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter (a peft directory or a GGUF LoRA file) under `name`. Raises ValueError if it is not
        an adapter of this model."""
        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        lora = C.llama_adapter_lora_init(self.model, str(self.prepare_adapter(path)).encode())
        if not lora:
            raise ValueError(f"llama.cpp could not load the LoRA adapter at {path} (another model's adapter?)")
        self._loras[name], self.adapters[name] = lora, path

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(name)
        if self._active == name:
            self._use(None)
        C.llama_adapter_lora_free(self._loras.pop(name))
        del self.adapters[name]

    def _use(self, adapter: str | None) -> None:
        """Apply one adapter (or none) to the context. llama.cpp re-reserves its graph at the next decode after a
        change, so steps of one adapter keep it set."""
        if adapter == self._active:
            return
        if adapter is None:
            rc = C.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            loras = (C.llama_adapter_lora_p_ctypes * 1)(self._loras[adapter])
            rc = C.llama_set_adapters_lora(self.ctx, loras, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not apply the LoRA adapter {adapter!r} (code {rc})")
        self._active = adapter

    def run(self, batch: Batch) -> np.ndarray:
        """Decode the step's chunks, one llama_decode per adapter among them (llama.cpp applies an adapter to the
        whole context); logits [N, V] for the chunks that end their sequence, in the batch's order."""
        for op in batch.kv_ops:
            if isinstance(op, Copy):
                self.copy(op.src, op.dst, op.n)
            else:
                self.trim(op.slot, op.keep)
        if not batch.chunks:
            return np.empty((0, self.tokenizer.vocab_size), dtype=np.float32)
        groups: dict[str | None, list[int]] = {}
        for i, chunk in enumerate(batch.chunks):
            groups.setdefault(chunk.seq.adapter, []).append(i)
        if len(groups) == 1:
            self._use(batch.chunks[0].seq.adapter)
            return self._decode(self._fill(batch.chunks))
        # Rows of logits in batch order: chunk i's row is the count of logit-giving chunks before it.
        row_of = np.cumsum([c.needs_logits for c in batch.chunks]) - 1
        out = np.empty((int(row_of[-1]) + 1, self.tokenizer.vocab_size), dtype=np.float32)
        # The adapter the context holds goes first: a step of two groups then switches once, not twice.
        for adapter, members in sorted(groups.items(), key=lambda group: group[0] != self._active):
            self._use(adapter)
            chunks = [batch.chunks[i] for i in members]
            logits = self._decode(self._fill(chunks))
            out[[row_of[i] for i in members if batch.chunks[i].needs_logits]] = logits
        return out

    def _fill(self, chunks: list[Chunk]) -> int:
        """Write the chunks' tokens into the batch arrays; the number of tokens."""
        n = 0
        for chunk in chunks:
            end = n + chunk.length
            self._tokens[n:end] = chunk.seq.tokens(chunk.start, chunk.length)
            self._pos[n:end] = np.arange(chunk.start, chunk.start + chunk.length, dtype=np.int32)
            self._seq_ids[n:end] = chunk.seq.slot
            self._logits[n:end] = 0
            self._logits[end - 1] = chunk.needs_logits
            n = end
        return n

    def score(self, token_ids: list[int], start: int) -> np.ndarray:
        """Logits [len - start, V] at positions start.. of token_ids decoded alone in one batch (for measurement
        scripts: it clears the whole KV cache, so never while the engine serves)."""
        n = len(token_ids)
        if not 0 < start < n <= len(self._tokens):
            raise ValueError(f"score needs 0 < start < len(token_ids) <= {len(self._tokens)}")
        C.llama_memory_clear(self._memory, True)
        self._use(None)
        self._tokens[:n], self._pos[:n], self._seq_ids[:n] = token_ids, np.arange(n), 0
        self._logits[:n] = np.arange(n) >= start
        return self._decode(n)

    def _decode(self, n: int) -> np.ndarray:
        """llama_decode the first n tokens of the batch arrays; logits [rows with a logits flag, V], a view of
        llama.cpp's buffer, valid until the next decode."""
        self._batch.n_tokens = n
        rc = C.llama_decode(self.ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} on a batch of {n} tokens")
        rows = int(self._logits[:n].sum())
        return np.ctypeslib.as_array(C.llama_get_logits(self.ctx), shape=(rows, self.tokenizer.vocab_size))

    def _embed_context(self) -> C.llama_context_p:
        """The embeddings context, made on first use: each token's final hidden state out (pooling none), sequence
        0 for the pieces of one long input, 1.. for short inputs."""
        if self._embed_ctx is None:
            params = C.llama_context_default_params()
            params.n_ctx = self.embed_len + self.embed_chunk
            params.n_batch = params.n_ubatch = self.embed_chunk
            params.n_seq_max, params.kv_unified = self.embed_seqs + 1, True
            params.embeddings, params.pooling_type = True, C.LLAMA_POOLING_TYPE_NONE
            params.n_threads = params.n_threads_batch = self._n_threads
            params.no_perf = True
            self._embed_ctx = C.llama_init_from_model(self.model, params)
            if not self._embed_ctx:
                raise RuntimeError("llama.cpp could not create an embeddings context")
        return self._embed_ctx

    def embed(self, token_lists: list[list[int]], start: int | None = None) -> np.ndarray:
        """Sums of the final hidden states [N, n_embd] over each list's tokens, in one llama_decode on a context of
        their own (the KV slots stay untouched). Whole inputs, or (start given) one piece of a long input whose
        tokens before start the calls before held: the model's attention is causal, so the pieces' states are the
        whole input's."""
        ctx = self._embed_context()
        n = sum(len(tokens) for tokens in token_lists)
        piece = start is not None
        if len(token_lists) > self.embed_seqs or n > self.embed_chunk or piece and len(token_lists) != 1:
            raise ValueError(f"at most {self.embed_seqs} inputs of {self.embed_chunk} tokens in all per call")
        if piece and not 0 <= start <= self.embed_len - n:
            raise ValueError(f"a piece must end within the first {self.embed_len} tokens of its input")
        memory = C.llama_get_memory(ctx)
        seqs = [0] if piece else list(range(1, len(token_lists) + 1))
        if piece:
            C.llama_memory_seq_rm(memory, 0, start, -1)  # a first piece drops the last long input's cells
        batch = C.llama_batch_init(n, 0, 1)
        try:
            i = 0
            for seq, tokens in zip(seqs, token_lists, strict=True):
                for pos, token in enumerate(tokens, start or 0):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, True
                    batch.seq_id[i][0] = seq
                    i += 1
            batch.n_tokens = n
            if (rc := C.llama_decode(ctx, batch)) != 0:
                raise RuntimeError(f"llama_decode failed with code {rc} on {len(token_lists)} embeddings inputs")
            dim = C.llama_model_n_embd(self.model)
            rows = np.ctypeslib.as_array(C.llama_get_embeddings(ctx), shape=(n, dim)).astype(np.float64)
        finally:
            C.llama_batch_free(batch)
            if not piece:  # short inputs are done; a long one's pieces stay for the next
                for seq in seqs:
                    C.llama_memory_seq_rm(memory, seq, -1, -1)
        return np.add.reduceat(rows, np.cumsum([0] + [len(tokens) for tokens in token_lists[:-1]]), axis=0)

    def trim(self, slot: int, keep: int) -> None:
        C.llama_memory_seq_rm(self._memory, slot, keep, -1)

    def copy(self, src: int, dst: int, n: int) -> None:
        # Across split streams llama.cpp copies only whole sequences (the buffer moves at the next decode);
        # so copy all of src, then cut dst back to the shared prefix.
        C.llama_memory_seq_rm(self._memory, dst, -1, -1)
        C.llama_memory_seq_cp(self._memory, src, dst, -1, -1)
        C.llama_memory_seq_rm(self._memory, dst, n, -1)

    def close(self) -> None:
        for name in list(self.adapters):
            self.unload_adapter(name)
        if self._embed_ctx:
            C.llama_free(self._embed_ctx)
            self._embed_ctx = None
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None
        # The weights are freed once the tokenizer's last user lets go too (ModelWeights); at once if none holds it.
        self.model = self._weights = None
