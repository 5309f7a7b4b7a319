"""Prefix-affinity routing for model hosts: a prompt goes to the replica that last took its longest known
prefix, so that replica's slot cache can reuse the prefix's KV; otherwise, or when that replica is busier than
the least loaded by more than `imbalance` requests, to the least loaded replica.

A Ray Serve request router (`serve.request_router.RequestRouter`, the public extension point). Prefixes are
known by chained hashes of 16-token blocks of the prompt's token ids, as vLLM's prefix cache names its blocks;
a match counts only when it covers at least `min_match` of the prompt, so a shared system prompt alone does not
pin every conversation to one replica. Ray's own PrefixCacheAffinityRouter needs ray[llm] (pyarrow and more)
and a separate prefix-tree actor; this one keeps its table in the router, one per handle.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from slmserve.cluster.channel import ChannelRequest
from slmserve.cluster.host import HostRequest


def block_hashes(token_ids: list[int], block: int) -> list[int]:
    """One hash per full block; hash i stands for the first (i + 1) * block tokens."""
    out, h = [], 0
    for start in range(0, len(token_ids) - block + 1, block):
        h = hash((h, *token_ids[start : start + block]))
        out.append(h)
    return out


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    """FIFOMixin: calls made at once from one HTTP request (n choices, /chat/batched) share Ray's internal request
    id, so Ray cannot tell their routings apart; without the mixin one of them is never routed and hangs. With
    it, a routing that finds no request of its own id serves the oldest waiting one."""

    def initialize_state(
        self, block_tokens: int = 16, min_match: float = 0.5, imbalance: int = 8, max_blocks: int = 100_000
    ) -> None:
        self.block_tokens, self.min_match, self.imbalance, self.max_blocks = (
            block_tokens,
            min_match,
            imbalance,
            max_blocks,
        )
        self._owner: OrderedDict[int, ReplicaID] = OrderedDict()  # block hash -> replica, least recent first
        self._inflight: Counter[ReplicaID] = Counter()  # this router's requests at each replica, sent till done

    def _prompt(self, pending: PendingRequest | None) -> list[int]:
        arg = pending.args[0] if pending is not None and pending.args else None
        return arg.prompt_token_ids if isinstance(arg, HostRequest) else []

    def affinity(self, token_ids: list[int], candidates: list[ReplicaID]) -> ReplicaID | None:
        """The replica that took this prompt's longest known prefix, if that prefix is long enough to count."""
        hashes = block_hashes(token_ids, self.block_tokens)
        for depth in range(len(hashes), 0, -1):
            if depth * self.block_tokens < self.min_match * len(token_ids):
                return None
            owner = self._owner.get(hashes[depth - 1])
            if owner in candidates:
                return owner
        return None

    def remember(self, token_ids: list[int], replica: ReplicaID) -> None:
        for h in block_hashes(token_ids, self.block_tokens):
            self._owner[h] = replica
            self._owner.move_to_end(h)
        while len(self._owner) > self.max_blocks:
            self._owner.popitem(last=False)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            # Every candidate is ranked below, so when none can take the request (all full, or a probe of their
            # queues timed out) Ray should back off before asking again; left False it retries in a hot loop.
            pending_request.routing_context.should_backoff = True
        arg = pending_request.args[0] if pending_request is not None and pending_request.args else None
        if isinstance(arg, ChannelRequest):  # a gateway's channel goes to the replica it names, or nowhere yet
            return [[r for r in candidate_replicas if r.replica_id.unique_id == arg.replica.rpartition("#")[2]]]
        by_load = sorted(candidate_replicas, key=lambda r: self._inflight[r.replica_id])
        token_ids = self._prompt(pending_request)
        owner = self.affinity(token_ids, [r.replica_id for r in by_load]) if token_ids else None
        first = by_load[0]
        if owner is not None and self._inflight[owner] <= self._inflight[first.replica_id] + self.imbalance:
            first = next(r for r in by_load if r.replica_id == owner)
        if token_ids:
            self.remember(token_ids, first.replica_id)  # corrected by on_request_routed when Ray reports it
        # Ranks: the choice first; if its queue is full, the others, least loaded first.
        return [[first], [r for r in by_load if r is not first]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        token_ids = self._prompt(pending_request)
        if token_ids:
            self.remember(token_ids, replica_id)

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        self._inflight[replica_id] += 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        if self._inflight[replica_id] > 0:
            self._inflight[replica_id] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._inflight.pop(replica_id, None)
        for h in [h for h, r in self._owner.items() if r == replica_id]:
            del self._owner[h]
