"""Scheduler behaviour with hand-built sequences: no model, no tensors."""

import numpy as np
import pytest

from slmserve.engine.detokenizer import Detokenizer
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import Copy, QueueFullError, Scheduler, Trim
from slmserve.engine.sequence import Sequence, Status


def seq(rid: str, n_prompt: int, start: int = 0) -> Sequence:
    return Sequence(
        rid, list(range(start, start + n_prompt)), SamplingParams(), Detokenizer(bytes), np.random.default_rng()
    )


def decode_one(sched: Scheduler, batch, token: int = 7) -> None:
    for chunk in sched.postprocess(batch):
        chunk.seq.output_token_ids.append(token)


def test_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding():
    sched = Scheduler(max_running=4, max_waiting=8, token_budget=16, kv_capacity=1000)
    a = seq("a", 4)
    sched.add(a)
    decode_one(sched, sched.schedule())  # a: prompt done, one token out
    b = seq("b", 40, start=100)
    sched.add(b)
    lengths = []
    for _ in range(4):
        batch = sched.schedule()
        lengths.append([(c.seq.request_id, c.length) for c in batch.chunks])
        decode_one(sched, batch)
    # Every step: 1 token for the decoding sequence first, then up to 15 prompt tokens of b.
    assert lengths[0] == [("a", 1), ("b", 15)]
    assert lengths[1] == [("a", 1), ("b", 15)]
    assert lengths[2] == [("a", 1), ("b", 10)]  # b's last chunk ends its prompt: b samples here
    assert lengths[3] == [("a", 1), ("b", 1)]


def test_only_the_chunk_that_ends_a_prompt_asks_for_logits():
    sched = Scheduler(max_running=2, max_waiting=2, token_budget=8, kv_capacity=100)
    sched.add(seq("a", 12))
    first, second = sched.schedule(), None
    assert [c.needs_logits for c in first.chunks] == [False]
    sched.postprocess(first)
    second = sched.schedule()
    assert [(c.start, c.length, c.needs_logits) for c in second.chunks] == [(8, 4, True)]


def test_slots_limit_running_and_a_removed_sequence_frees_its_slot_at_once():
    sched = Scheduler(max_running=2, max_waiting=8, token_budget=64, kv_capacity=1000)
    seqs = [seq(str(i), 3, start=10 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    batch = sched.schedule()
    assert [c.seq.request_id for c in batch.chunks] == ["0", "1"]
    assert seqs[2].status is Status.WAITING
    decode_one(sched, batch)
    freed = seqs[0].slot
    sched.remove(seqs[0])  # abort
    assert seqs[0].status is Status.FINISHED and len(sched.running) == 1
    batch = sched.schedule()
    assert "2" in [c.seq.request_id for c in batch.chunks]
    assert seqs[2].slot == freed


def test_waiting_queue_is_bounded():
    sched = Scheduler(max_running=1, max_waiting=2, token_budget=8, kv_capacity=100)
    for name in "abc":  # the free slot and the two waiting places
        sched.add(seq(name, 2))
    with pytest.raises(QueueFullError):
        sched.add(seq("d", 2))


def test_a_freed_slot_lends_its_prefix_to_a_new_sequence():
    sched = Scheduler(max_running=2, max_waiting=8, token_budget=64, kv_capacity=1000)
    a = seq("a", 10)
    sched.add(a)
    decode_one(sched, sched.schedule())
    decode_one(sched, sched.schedule())
    sched.remove(a)  # slot keeps tokens 0..10 (prompt + 1 computed output)
    b = Sequence("b", list(range(8)) + [99, 98], SamplingParams(), Detokenizer(bytes), np.random.default_rng())
    sched.add(b)
    batch = sched.schedule()
    assert b.slot == a_slot(batch, "b")
    assert Trim(b.slot, 8) in batch.kv_ops  # keep the 8 shared tokens, drop the rest
    assert [(c.start, c.length) for c in batch.chunks] == [(8, 2)]


def a_slot(batch, rid):
    return next(c.seq.slot for c in batch.chunks if c.seq.request_id == rid)


def test_identical_prompt_recomputes_only_its_last_token():
    sched = Scheduler(max_running=1, max_waiting=8, token_budget=64, kv_capacity=1000)
    a = seq("a", 6)
    sched.add(a)
    decode_one(sched, sched.schedule())
    sched.remove(a)
    b = seq("b", 6)
    sched.add(b)
    batch = sched.schedule()
    assert [(c.start, c.length, c.needs_logits) for c in batch.chunks] == [(5, 1, True)]


def test_full_kv_evicts_idle_caches_before_preempting_and_preempts_the_newest():
    sched = Scheduler(max_running=3, max_waiting=8, token_budget=64, kv_capacity=16)
    old = seq("old", 6, start=500)
    sched.add(old)
    decode_one(sched, sched.schedule())
    old_slot = old.slot
    sched.remove(old)  # 6 cached cells, 10 free
    a, b = seq("a", 6), seq("b", 6, start=100)
    sched.add(a)
    sched.add(b)
    batch = sched.schedule()
    assert [c.seq.request_id for c in batch.chunks] == ["a", "b"]  # b fits only once the idle cache is gone
    assert Trim(old_slot, 0) in batch.kv_ops and sched.num_cached_tokens == 0
    decode_one(sched, batch)
    for _ in range(10):
        batch = sched.schedule()
        if b.status is Status.WAITING:
            break
        decode_one(sched, batch)
    # 16 cells computed, 2 needed: the newest sequence (b) is preempted, a goes on.
    assert b.status is Status.WAITING and b.num_computed == 0 and b.num_preemptions == 1
    assert [c.seq.request_id for c in batch.chunks] == ["a"]
    assert sched.waiting[0] is b
    assert a.status is Status.RUNNING


def test_a_shared_prefix_held_by_a_running_sequence_is_copied_into_a_new_slot():
    sched = Scheduler(max_running=4, max_waiting=8, token_budget=64, kv_capacity=1000)
    system = list(range(50, 70))  # 20 shared tokens, as a chat template's system prompt
    a = Sequence("a", system + [1, 2], SamplingParams(), Detokenizer(bytes), np.random.default_rng())
    sched.add(a)
    decode_one(sched, sched.schedule())
    b = Sequence("b", system + [3, 4, 5], SamplingParams(), Detokenizer(bytes), np.random.default_rng())
    sched.add(b)
    batch = sched.schedule()
    assert Copy(a.slot, b.slot, 20) in batch.kv_ops and b.slot != a.slot
    assert [(c.seq.request_id, c.start, c.length) for c in batch.chunks] == [("a", 22, 1), ("b", 20, 3)]


def test_a_few_shared_tokens_are_not_worth_a_copy():
    sched = Scheduler(max_running=4, max_waiting=8, token_budget=64, kv_capacity=1000)
    a = seq("a", 5)
    sched.add(a)
    decode_one(sched, sched.schedule())
    b = Sequence("b", [0, 1, 2, 99, 98], SamplingParams(), Detokenizer(bytes), np.random.default_rng())
    sched.add(b)
    batch = sched.schedule()
    assert not any(isinstance(op, Copy) for op in batch.kv_ops)
    assert [(c.seq.request_id, c.start, c.length) for c in batch.chunks] == [("a", 5, 1), ("b", 0, 5)]


def test_batches_list_sequences_in_slot_order():
    sched = Scheduler(max_running=4, max_waiting=8, token_budget=64, kv_capacity=1000)
    seqs = [seq(str(i), 3, start=10 * i) for i in range(4)]
    for s in seqs:
        sched.add(s)
    decode_one(sched, sched.schedule())
    sched.remove(seqs[0])
    sched.remove(seqs[2])
    late = [seq(f"late{i}", 3, start=100 + 10 * i) for i in range(2)]
    for s in late:
        sched.add(s)
    batch = sched.schedule()
    slots = [c.seq.slot for c in batch.chunks]
    assert slots == sorted(slots) and len(slots) == 4


def test_sequence_tokens_span_prompt_and_output():
    s = seq("a", 4)  # prompt [0, 1, 2, 3]
    s.output_token_ids.extend([10, 11, 12])
    assert s.tokens(0, 7) == [0, 1, 2, 3, 10, 11, 12]
    assert s.tokens(1, 2) == [1, 2]
    assert s.tokens(3, 2) == [3, 10]
    assert s.tokens(5, 2) == [11, 12]
    assert s.tokens(6, 1) == [12]


def run_once(sched: Scheduler, rid: str, adapter: str | None) -> list[tuple[int, int]]:
    """Admit a 6-token prompt under `adapter`, decode one token, free it; the (start, length) it was fed."""
    s = seq(rid, 6)
    s.adapter = adapter
    sched.add(s)
    batch = sched.schedule()
    decode_one(sched, batch)
    sched.remove(s)  # its slot keeps the KV, computed with this adapter
    return [(c.start, c.length) for c in batch.chunks]


def test_a_prefix_is_reused_only_under_the_same_lora_adapter():
    sched = Scheduler(max_running=1, max_waiting=8, token_budget=64, kv_capacity=1000)
    assert run_once(sched, "a", "pirate") == [(0, 6)]
    assert run_once(sched, "b", None) == [(0, 6)]  # recomputed: other weights, other KV
    assert run_once(sched, "c", None) == [(5, 1)]  # the same adapter (none): reused


def test_drop_caches_forgets_an_unloaded_adapters_kv():
    sched = Scheduler(max_running=1, max_waiting=8, token_budget=64, kv_capacity=1000)
    run_once(sched, "a", "pirate")
    sched.drop_caches("pirate")  # a new adapter may take the name: its KV would differ
    assert run_once(sched, "b", "pirate") == [(0, 6)]


def test_a_burst_before_a_step_may_fill_the_free_slots_as_well_as_the_waiting_places():
    sched = Scheduler(max_running=4, max_waiting=8, token_budget=64, kv_capacity=1000)
    for i in range(12):  # 4 free slots and 8 waiting places, all before the first step
        sched.add(seq(str(i), 3, start=10 * i))
    with pytest.raises(QueueFullError):
        sched.add(seq("13", 3, start=500))
    decode_one(sched, sched.schedule())  # 4 run, 8 wait: the room is the waiting places alone now
    assert len(sched.running) == 4 and sched.room == 0
