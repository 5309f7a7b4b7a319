"""The PyTorch backend: a Hugging Face causal LM, a KV cache of fixed slots, one forward pass per engine step.

The model classes and weights are transformers' own. Llama models run a lean forward over those modules
(llama_forward.py); others run their own forward, with an attention function (slot_cache.py) that keeps every
layer's keys and values in our cache. Either way a step's chunks go in as T rows of one token each: each token
carries its slot and position, so decoding sequences and prefill chunks share every matmul, and only attention
is computed per sequence.
"""

from __future__ import annotations

import numpy as np
import torch

from slmserve.engine.embedding import EMBED_SEQS, EMBED_TOKENS
from slmserve.engine.llama_forward import LlamaForward, linear
from slmserve.engine.scheduler import Batch, Copy
from slmserve.engine.slot_cache import ATTN_IMPLEMENTATION, SlotCache, StepLayout


class _WideLinear(torch.nn.Linear):
    """nn.Linear through `linear` (MKL's faster form on the CPU). Swapped in by class, so peft's LoRA wrappers
    still see an nn.Linear as their base layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class TorchRunner:
    """Owns a transformers model, its slot cache and its LoRA adapters. Used from the engine thread only.

    The step's tokens go in as a batch of T one-token rows, [T, 1]: the matmuls see the same [T, hidden]
    matrix as with [1, T], and peft's mixed-adapter forward, which groups rows of the batch axis by adapter,
    can give each token its own sequence's adapter. So requests for different adapters share one step.
    """

    def __init__(self, model, tokenizer, *, n_slots: int, slot_len: int, device: str = "cpu") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.cache = SlotCache(
            config.num_hidden_layers, n_slots, kv_heads, slot_len, head_dim, dtype=model.dtype, device=self.device
        )
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                module.__class__ = _WideLinear
        self._decoder = model.base_model  # the transformer without its LM head
        self._llama = LlamaForward(self._decoder) if LlamaForward.supports(self._decoder) else None
        self._head = model.get_output_embeddings()
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self.vocab_size = self._head.out_features
        self.embed_len = min(EMBED_TOKENS, slot_len)
        self.embed_seqs = EMBED_SEQS
        self.embed_chunk = self.embed_len
        self.peft = None  # a PeftModel wrapping self.model, once an adapter is loaded
        self.adapters: dict[str, str] = {}  # name -> path
        self._step_adapters: list[str] | None = None  # per token, read by the LoRA layers' pre-hook
        self._lora_mode: str | None = None  # "off", an adapter's name, or "mixed": how the LoRA layers are set

    # -- adapters ---------------------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> None:
        """Load a peft LoRA adapter directory under `name`. Raises ValueError if it does not fit this model."""
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer

        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
                self.peft.to(self.device)
                for module in self.model.modules():
                    if isinstance(module, LoraLayer):
                        module.register_forward_pre_hook(self._adapter_names_hook, with_kwargs=True)
            else:
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
                self.peft.to(self.device)
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot load the LoRA adapter at {path}: {exc}") from exc
        self.model.eval()
        self.adapters[name] = path
        self._lora_mode = None  # peft made the new adapter the active one

    def prepare_adapter(self, path: str) -> str:
        """Nothing to prepare: peft reads the adapter directory as it is."""
        return path

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(name)
        self.peft.delete_adapter(name)
        del self.adapters[name]
        self._lora_mode = None

    def _set_lora_mode(self, adapters: list[str]) -> list[str] | None:
        """Set the LoRA layers for this step; the per-token names when the step mixes adapters, else None.

        A step of one adapter (or of the base model alone) runs peft's plain forward: its mixed-batch path
        gathers and scatters rows in every LoRA layer, 8% of a step's time even when no token uses an adapter.
        """
        names = set(adapters)
        mode = "mixed" if len(names) > 1 else ("off" if names == {BASE} else names.pop())
        if mode != self._lora_mode:
            lora = self.peft.base_model
            if mode == "off":
                lora.disable_adapter_layers()
            else:
                lora.enable_adapter_layers()
                if mode != "mixed":
                    lora.set_adapter(mode)
            self._lora_mode = mode
        return adapters if mode == "mixed" else None

    def _adapter_names_hook(self, module, args, kwargs):
        if self._step_adapters is not None:
            kwargs["adapter_names"] = self._step_adapters
        return args, kwargs

    # -- steps ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, batch: Batch) -> np.ndarray:
        """One forward pass over all chunks; logits [N, V] for the chunks that end their sequence."""
        for op in batch.kv_ops:
            if isinstance(op, Copy):
                self.cache.copy(op.src, op.dst, op.n)
            # A Trim needs nothing: a slot's cells past its length are never read and get overwritten.
        if not batch.chunks:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        tokens, keep, adapters = [], [], []
        for chunk in batch.chunks:
            tokens.extend(chunk.seq.tokens(chunk.start, chunk.length))
            adapters.extend([chunk.seq.adapter or BASE] * chunk.length)
            if chunk.needs_logits:
                keep.append(len(tokens) - 1)
        layout = StepLayout.of(self.cache, batch.chunks, self.device, self.model.dtype)
        self._step_adapters = self._set_lora_mode(adapters) if self.peft is not None else None
        try:
            if self._llama is not None:  # its fused products hold the base weights: usable while LoRA is off
                fused = self.peft is None or self._lora_mode == "off"
                hidden = self._llama(self._tensor(tokens), layout, fused=fused)
            else:
                hidden = self._decoder(
                    input_ids=self._tensor(tokens)[:, None],
                    position_ids=layout.positions[:, None],
                    use_cache=False,
                    slmserve_step=layout,
                ).last_hidden_state[:, 0]
            if self._step_adapters is not None:  # a LoRA on the LM head sees the kept rows only
                self._step_adapters = [adapters[i] for i in keep]
            logits = self._head(hidden[self._tensor(keep)])
        finally:
            self._step_adapters = None
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        # Row-major for the sampler, which scans one row at a time: `linear` leaves the rows strided, and argmax
        # over 32 strided rows took 3.6 ms against 1.5 for this copy and 0.2 for the scans.
        return logits.float().contiguous().cpu().numpy()

    @torch.inference_mode()
    def embed(self, token_lists: list[list[int]], start: int | None = None) -> np.ndarray:
        """Sums of the final hidden states [N, hidden] of the base model (no adapter) over each input's tokens. A
        padded batch through transformers' own attention, no slot used: whole inputs only (embed_chunk is
        embed_len, so no input comes in pieces)."""
        if start is not None:
            raise ValueError("the torch engine embeds whole inputs only")
        if self.peft is not None:
            self._set_lora_mode([BASE])
        width = max(len(tokens) for tokens in token_lists)
        ids = torch.zeros(len(token_lists), width, dtype=torch.long)
        mask = torch.zeros(len(token_lists), width, dtype=torch.long)
        for i, tokens in enumerate(token_lists):
            ids[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, : len(tokens)] = 1
        self.model.set_attn_implementation("sdpa")
        try:
            hidden = self._decoder(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
            ).last_hidden_state.float()  # [N, L, H]
        finally:
            self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        weights = mask.to(hidden.device, hidden.dtype)[:, :, None]
        return (hidden * weights).sum(1).double().cpu().numpy()

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def close(self) -> None:
        self.cache = None
        self.model = self.peft = self._decoder = self._llama = self._head = None
