"""The torch runner's KV cache: fixed slots, one per sequence, and attention over them.

A step's tokens lie on one axis, T rows: each carries its slot and position, so decoding sequences and prefill
chunks share every matmul, and only attention is computed per sequence. `attend` serves both forwards: the lean
Llama one (llama_forward.py) and transformers' own modules, through the attention function registered here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from slmserve.engine.scheduler import Chunk

ATTN_IMPLEMENTATION = "slmserve_slots"


class SlotCache:
    """Keys and values of every layer: [slots, kv_heads, slot_len, head_dim] each."""

    def __init__(self, n_layers: int, n_slots: int, kv_heads: int, slot_len: int, head_dim: int, **kw) -> None:
        shape = (n_slots, kv_heads, slot_len, head_dim)
        self.k = [torch.zeros(shape, **kw) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, **kw) for _ in range(n_layers)]

    def copy(self, src: int, dst: int, n: int) -> None:
        for layer in (*self.k, *self.v):
            layer[dst, :, :n] = layer[src, :, :n]


@dataclass
class _Prefill:
    rows: slice  # this chunk's tokens in the flattened step
    slot: int
    start: int  # position of its first token


@dataclass
class StepLayout:
    """Where each token of a step lives in the KV cache, and how attention groups them."""

    cache: SlotCache
    slots: torch.Tensor  # [T] slot of each token
    positions: torch.Tensor  # [T]
    prefills: list[_Prefill]
    # Set when the step decodes: the rows of its one-token chunks, the slot range that holds them, each row's
    # slot counted from that range's start (None when rows and slots run in the same order without gaps: the
    # common case, which needs no gather or scatter), and a [S * KV, 1, L] mask (a row per slot and KV head),
    # 0 where a slot may see a key position and -inf elsewhere.
    decode_rows: torch.Tensor | slice | None = None
    decode_slots: slice = field(default_factory=lambda: slice(0, 0))
    decode_index: torch.Tensor | None = None
    decode_mask: torch.Tensor | None = None

    @classmethod
    def of(cls, cache: SlotCache, chunks: Iterable[Chunk], device: torch.device, dtype: torch.dtype) -> StepLayout:
        slots, positions, prefills = [], [], []
        decode_rows, decode_slots, decode_lens = [], [], []
        for chunk in chunks:
            row, slot = len(slots), chunk.seq.slot
            slots.extend([slot] * chunk.length)
            positions.extend(range(chunk.start, chunk.start + chunk.length))
            if chunk.length == 1 and chunk.start > 0:
                decode_rows.append(row)
                decode_slots.append(slot)
                decode_lens.append(chunk.start + 1)
            else:
                prefills.append(_Prefill(slice(row, row + chunk.length), slot, chunk.start))
        tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        layout = cls(cache, tensor(slots), tensor(positions), prefills)
        if not decode_rows:
            return layout
        lo, hi = min(decode_slots), max(decode_slots) + 1
        lens = torch.zeros(hi - lo, dtype=torch.long)
        lens[torch.tensor(decode_slots) - lo] = torch.tensor(decode_lens)
        visible = torch.arange(max(decode_lens)) < lens[:, None]  # [S, L]
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))
        layout.decode_slots = slice(lo, hi)
        n_kv = cache.k[0].shape[1]
        layout.decode_mask = mask.repeat_interleave(n_kv, dim=0)[:, None, :].to(device)
        first = decode_rows[0]
        if decode_slots == list(range(lo, hi)) and decode_rows == list(range(first, first + hi - lo)):
            layout.decode_rows = slice(first, first + hi - lo)
        else:
            layout.decode_rows = tensor(decode_rows)
            layout.decode_index = tensor([s - lo for s in decode_slots])
        return layout


def attend(step: StepLayout, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float):
    """Write a layer's new keys/values into the slots, then attend each token to its own slot's history.

    q [T, H, D], k and v [T, KV, D]; returns [T, H, D].
    """
    k_cache, v_cache = step.cache.k[layer], step.cache.v[layer]
    k_cache[step.slots, :, step.positions] = k
    v_cache[step.slots, :, step.positions] = v
    n_tokens, n_heads, dim = q.shape
    n_kv = k.shape[1]
    group = n_heads // n_kv
    if step.decode_rows is not None:
        # One query per sequence: fold the query heads of a KV head into the query-length axis, [S, KV, G, D],
        # and attend over the slot range in one call, masked to each slot's own length.
        s = step.decode_slots
        length = step.decode_mask.shape[-1]
        if step.decode_index is None:
            q_slots = q[step.decode_rows].reshape(-1, n_kv, group, dim)
        else:
            q_slots = q.new_zeros(s.stop - s.start, n_kv, group, dim)
            q_slots[step.decode_index] = q[step.decode_rows].reshape(-1, n_kv, group, dim)
        # Batched matmuls: with a query length of 3 or so they beat CPU SDPA by about a third (measured, L 60-300).
        # baddbmm folds in the scale and the mask: 0.6-1.2 ms less a 32-sequence step than a matmul, mul_ and add_.
        keys = k_cache[s, :, :length].reshape(-1, length, dim)  # [S*KV, L, D], a view
        scores = torch.baddbmm(step.decode_mask, q_slots.reshape(-1, group, dim), keys.transpose(1, 2), alpha=scaling)
        o = torch.bmm(scores.softmax(-1), v_cache[s, :, :length].reshape(-1, length, dim))  # [S*KV, G, D]
        if not step.prefills and step.decode_index is None:
            return o.view(n_tokens, n_heads, dim)  # the step is all decodes, in row order
        out = q.new_empty(n_tokens, n_heads, dim)
        o = o.view(-1, n_kv, group, dim)
        out[step.decode_rows] = (o if step.decode_index is None else o[step.decode_index]).reshape(-1, n_heads, dim)
    else:
        out = q.new_empty(n_tokens, n_heads, dim)
    for p in step.prefills:
        end = p.start + (p.rows.stop - p.rows.start)
        q_chunk = q[p.rows].transpose(0, 1)[None]  # [1, H, n, D]
        k_seen = k_cache[p.slot : p.slot + 1, :, :end].repeat_interleave(group, dim=1)
        v_seen = v_cache[p.slot : p.slot + 1, :, :end].repeat_interleave(group, dim=1)
        if p.start == 0:
            o = F.scaled_dot_product_attention(q_chunk, k_seen, v_seen, is_causal=True, scale=scaling)
        else:
            mask = torch.ones(end - p.start, end, dtype=torch.bool, device=q.device).tril(p.start)
            o = F.scaled_dot_product_attention(q_chunk, k_seen, v_seen, attn_mask=mask, scale=scaling)
        out[p.rows] = o[0].transpose(0, 1)
    return out


def slot_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [T, H, 1, D]: the step's tokens lie on the batch axis
    key: torch.Tensor,  # [T, KV, 1, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    slmserve_step: StepLayout | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """`attend` as a transformers attention function, for the models that run their own modules' forward."""
    if slmserve_step is None:  # called outside our runner, e.g. by a training loop on the same model
        raise RuntimeError(f"attention {ATTN_IMPLEMENTATION!r} needs the runner's step layout")
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = attend(slmserve_step, module.layer_idx, query[:, :, 0], key[:, :, 0], value[:, :, 0], scaling)
    return out.unsqueeze(1), None  # [T, 1, H, D]: transformers expects [batch, query length, heads, dim]


AttentionInterface.register(ATTN_IMPLEMENTATION, slot_attention)
