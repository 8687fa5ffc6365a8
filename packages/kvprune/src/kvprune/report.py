"""Per-request report: the policy each (layer, KV head) got, tokens kept, bytes freed.

Bytes are keys + values. ``full_bytes``: what a full cache holds for the tokens seen so far;
``kept_bytes``: the entries the ragged cache keeps; ``freed_bytes = full - kept`` (never
negative); ``allocated_bytes``: rows allocated, i.e. kept entries plus the free rows each
(row, KV head) keeps for growth (``slack``/``reserve``), reported separately as
``slack_bytes`` because it depends on allocation settings, not on the policy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class RequestReport:
    """One batch row. ``policies[layer][head]`` names the policy, ``kept[layer][head]`` counts
    live tokens."""

    row: int
    tokens: int  # real tokens whose keys/values were cached (prompt + decoded so far)
    policies: list[list[str]]
    kept: list[list[int]]
    recovery: list[list[float]]
    full_bytes: int
    kept_bytes: int
    allocated_bytes: int

    @property
    def freed_bytes(self) -> int:
        return self.full_bytes - self.kept_bytes

    @property
    def slack_bytes(self) -> int:
        return self.allocated_bytes - self.kept_bytes

    @property
    def kept_fraction(self) -> float:
        return self.kept_bytes / self.full_bytes if self.full_bytes else 1.0

    def policy_counts(self) -> dict[str, int]:
        return dict(Counter(p for layer in self.policies for p in layer))


@dataclass
class Report:
    requests: list[RequestReport]
    metadata_bytes: int
    kv_allocated_bytes: int

    @property
    def full_bytes(self) -> int:
        return sum(r.full_bytes for r in self.requests)

    @property
    def kept_bytes(self) -> int:
        return sum(r.kept_bytes for r in self.requests)

    @property
    def freed_bytes(self) -> int:
        return self.full_bytes - self.kept_bytes

    @property
    def slack_bytes(self) -> int:
        return self.kv_allocated_bytes - self.kept_bytes

    @property
    def kept_fraction(self) -> float:
        return self.kept_bytes / self.full_bytes if self.full_bytes else 1.0

    def policy_counts(self) -> dict[str, int]:
        total: Counter = Counter()
        for r in self.requests:
            total.update(r.policy_counts())
        return dict(total)

    def summary(self) -> str:
        mb = 1e6
        lines = []
        for r in self.requests:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(r.policy_counts().items()))
            lines.append(
                f"request {r.row}: {r.tokens} tokens; kept {r.kept_fraction:.1%} of KV entries "
                f"({r.kept_bytes / mb:.2f} of {r.full_bytes / mb:.2f} MB, freed "
                f"{r.freed_bytes / mb:.2f} MB); heads per policy: {counts}"
            )
        lines.append(
            f"total: kept {self.kept_bytes / mb:.2f} of {self.full_bytes / mb:.2f} MB "
            f"({self.kept_fraction:.1%}), freed {self.freed_bytes / mb:.2f} MB; allocated "
            f"{self.kv_allocated_bytes / mb:.2f} MB = kept + {self.slack_bytes / mb:.2f} MB of "
            f"growth slack (+{self.metadata_bytes / mb:.3f} MB metadata)"
        )
        return "\n".join(lines)


def build_report(cache) -> Report:
    layers = [layer for layer in cache.layers if layer.compressed]
    if not layers:
        raise RuntimeError("the cache has not seen a prompt yet: nothing to report")
    b, h = layers[0].store.batch, layers[0].store.n_kv
    requests = []
    for row in range(b):
        segs = slice(row * h, (row + 1) * h)
        policies, kept, rec = [], [], []
        full = kept_b = alloc = 0
        tokens = int(layers[0].store.next_pos[row])
        for layer in layers:
            store = layer.store
            row_bytes = 2 * store.k_pool.shape[1] * store.k_pool.element_size()
            names = layer.policy_names
            policies.append([names[int(i)] for i in layer.policy_index[segs]])
            lens = [int(x) for x in store.lengths[segs]]
            kept.append(lens)
            rec.append([float(x) for x in layer.recovery[segs]])
            full += tokens * h * row_bytes
            kept_b += sum(lens) * row_bytes
            alloc += int(store.capacity[segs].sum()) * row_bytes
        requests.append(RequestReport(row, tokens, policies, kept, rec, full, kept_b, alloc))
    mem = cache.memory()
    return Report(requests, mem["metadata"], mem["kv_allocated"])
