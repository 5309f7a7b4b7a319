"""A lean forward pass for transformers' Llama models (SmolLM2, TinyLlama, Llama 2 and 3): the same modules and
weights, the same arithmetic, fewer operations.

At 32 sequences on 2 CPU cores, a step's matmuls take ~80 ms; transformers' forward adds ~45 ms of smaller
work around them. This one cuts 12-15 ms of it (measured alternating with transformers' forward):
- the step is one [T, hidden] matrix, with no per-call mask, cache or output bookkeeping;
- q, k and v come from one matrix product, and so do the MLP's gate and up: the modules' weights become views
  into the fused matrices, so nothing is stored twice;
- the rotary embedding turns q and k in one pass, with rotate_half's negation folded into the sine table;
- RMSNorm, the rotary embedding and the residual adds work in place where they can.
On the CPU in fp32 its logits are bit-identical to transformers' own forward over the same modules and slot cache
(tests/torch_engine/test_llama_forward.py), and greedy output is token-identical to `generate`
(tests/torch_engine/test_fidelity.py).

While a LoRA adapter is active, its layers wrap the projections: the forward then calls the modules one by one,
as peft expects, and only the fused products are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaModel

from slmserve.engine.slot_cache import StepLayout, attend

_ROW_BLOCK = 4096


def _padded(rows: int) -> int:
    """The row count to multiply at: MKL's time on these CPUs jumps with the count of rows (x's), and some
    counts cost far more than a larger one. SmolLM2's 211 products a step, in ms: 1 row 40, 2 26, 3 33, 4 26,
    7 48, 8 43, 12 73, 15 116, 16 53, 24 74, 28 96, 31 139, 32 76. So 1 and 3 rows go as 2 and 4, and from 7 on
    a count rounds up to a multiple of 8."""
    if rows in (1, 3):
        return rows + 1
    return rows if rows < 7 else -(-rows // 8) * 8


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, computed on the CPU in fp32 as (W @ x.T).T, with x padded with zero rows to a faster count.

    MKL picks a faster kernel for that orientation on these CPUs, with cold weights as in a step: at 32 rows
    20-30% less time for every matrix of SmolLM2, at 2-8 rows 35-65% less. A tall matrix goes in blocks of 4096
    rows: SmolLM2's 49152-row LM head took 27 ms as F.linear, 19.3 in one product and 16.5 in blocks, at 32
    rows. The results are not always F.linear's bits (at 2-8 rows they differ in the last place), so greedy
    output is tested token for token against `generate` (tests/torch_engine/test_fidelity.py).
    """
    rows = x.numel() // x.shape[-1]
    if rows == 0 or x.device.type != "cpu" or x.dtype != torch.float32:
        return F.linear(x, weight, bias)
    x2d = x.reshape(rows, -1)
    padded = _padded(rows)
    if padded > rows:
        x2d = torch.cat([x2d, x2d.new_zeros(padded - rows, x2d.shape[1])])
    if len(weight) <= 2 * _ROW_BLOCK:
        y = torch.mm(weight, x2d.t())  # [out, padded]
    else:
        y = x.new_empty(len(weight), padded)
        for i in range(0, len(weight), _ROW_BLOCK):
            torch.mm(weight[i : i + _ROW_BLOCK], x2d.t(), out=y[i : i + _ROW_BLOCK])
    y = y[:, :rows].t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], -1)


def _fuse(modules: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several Linears on the same input; theirs become views into it."""
    weight = torch.cat([m.weight.detach() for m in modules])
    bias = None if modules[0].bias is None else torch.cat([m.bias.detach() for m in modules])
    row = 0
    for m in modules:
        n = m.out_features
        m.weight.data = weight[row : row + n]
        if bias is not None:
            m.bias.data = bias[row : row + n]
        row += n
    return weight, bias


def _rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic (fp32 statistics, then the weight in the input's dtype), with in-place steps:
    torch's own rms_norm copies its input twice on the CPU."""
    x32 = x.float()
    scale = x32.pow(2).mean(-1, keepdim=True).add_(norm.variance_epsilon).rsqrt_()
    return (x32 * scale).to(x.dtype).mul_(norm.weight)


class LlamaForward:
    """Runs a transformers LlamaModel over a step's tokens, attention through the slot cache."""

    @staticmethod
    def supports(decoder: torch.nn.Module) -> bool:
        return type(decoder) is LlamaModel

    def __init__(self, decoder: LlamaModel) -> None:
        config = decoder.config
        self.decoder = decoder
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        with torch.no_grad():
            self._qkv = [_fuse([a.q_proj, a.k_proj, a.v_proj]) for a in (layer.self_attn for layer in decoder.layers)]
            self._gate_up = [_fuse([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in decoder.layers]

    def __call__(self, input_ids: torch.Tensor, step: StepLayout, fused: bool = True) -> torch.Tensor:
        """Hidden states [T, hidden] after the final norm, for input_ids [T]. fused=False calls each projection
        module (an active LoRA adapter wraps them)."""
        d = self.decoder
        n_heads, n_kv, dim = self.n_heads, self.n_kv, self.head_dim
        h = d.embed_tokens(input_ids)  # [T, E]
        n_tokens = h.shape[0]
        cos, sin = d.rotary_emb(h, step.positions[None])  # [1, T, D]
        cos, sin = cos[0, :, None], sin[0, :, None]  # [T, 1, D], to broadcast over heads
        # rotate_half(x) * sin == roll(x, D/2) * sin', with sin' the sine table negated in its first half
        sin = torch.cat([-sin[..., : dim // 2], sin[..., dim // 2 :]], dim=-1)
        for i, layer in enumerate(d.layers):
            attn, mlp = layer.self_attn, layer.mlp
            x = _rms_norm(h, layer.input_layernorm)
            if fused:
                qkv = linear(x, *self._qkv[i])
            else:
                qkv = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1)
            qkv = qkv.view(n_tokens, n_heads + 2 * n_kv, dim)
            qk = qkv[:, : n_heads + n_kv]
            qk = (qk * cos).add_(qk.roll(dim // 2, -1).mul_(sin))
            o = attend(step, i, qk[:, :n_heads], qk[:, n_heads:], qkv[:, n_heads + n_kv :], attn.scaling)
            h.add_(attn.o_proj(o.reshape(n_tokens, -1)))  # h is this forward's own tensor: add in place
            x = _rms_norm(h, layer.post_attention_layernorm)
            if fused:
                gate, up = linear(x, *self._gate_up[i]).chunk(2, dim=-1)
            else:
                gate, up = mlp.gate_proj(x), mlp.up_proj(x)
            h.add_(mlp.down_proj(mlp.act_fn(gate).mul_(up)))
        return _rms_norm(h, d.norm)
