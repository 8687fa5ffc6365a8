"""Per-request report: the policy each (layer, KV head) got, tokens kept, bytes freed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class RequestReport:
    """One batch row. ``policies[layer][head]`` names the policy, ``kept[layer][head]`` counts
    live tokens; bytes are for keys + values."""

    row: int
    tokens: int  # real tokens whose keys/values were cached (prompt + decoded so far)
    policies: list[list[str]]
    kept: list[list[int]]
    recovery: list[list[float]]
    full_bytes: int  # what a full (uncompressed) cache holds for this row
    kept_bytes: int  # live rows of the ragged cache
    allocated_bytes: int  # rows allocated for this row's segments (live + slack)

    @property
    def freed_bytes(self) -> int:
        return self.full_bytes - self.allocated_bytes

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
        return self.full_bytes - self.kv_allocated_bytes

    @property
    def kept_fraction(self) -> float:
        return self.kept_bytes / self.full_bytes if self.full_bytes else 1.0

    def policy_counts(self) -> dict[str, int]:
        total: Counter = Counter()
        for r in self.requests:
            total.update(r.policy_counts())
        return dict(total)

    def summary(self) -> str:
        lines = []
        for r in self.requests:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(r.policy_counts().items()))
            lines.append(
                f"request {r.row}: {r.tokens} tokens, kept {r.kept_fraction:.1%} of KV entries; "
                f"full cache {r.full_bytes / 1e6:.2f} MB, allocated {r.allocated_bytes / 1e6:.2f} "
                f"MB, freed {r.freed_bytes / 1e6:.2f} MB; heads per policy: {counts}"
            )
        lines.append(
            f"total: full {self.full_bytes / 1e6:.2f} MB, allocated {self.kv_allocated_bytes / 1e6:.2f}"
            f" MB (+{self.metadata_bytes / 1e6:.3f} MB metadata), freed {self.freed_bytes / 1e6:.2f} MB"
        )
        return "\n".join(lines)


def build_report(cache) -> Report:
    layers = [layer for layer in cache.layers if layer.compressed]
    if not layers:
        raise RuntimeError("the cache has not seen a prompt yet: nothing to report")
    b, h = layers[0].n_rows_batch, layers[0].n_kv
    requests = []
    for row in range(b):
        segs = slice(row * h, (row + 1) * h)
        policies, kept, rec = [], [], []
        full = kept_b = alloc = 0
        tokens = int(layers[0].next_pos[row])
        for layer in layers:
            row_bytes = 2 * layer.k_pool.shape[1] * layer.k_pool.element_size()
            names = layer.policy_names
            policies.append([names[int(i)] for i in layer.policy[segs]])
            lens = [int(x) for x in layer.lengths[segs]]
            kept.append(lens)
            rec.append([float(x) for x in layer.recovery[segs]])
            full += tokens * h * row_bytes
            kept_b += sum(lens) * row_bytes
            alloc += int(layer.capacity[segs].sum()) * row_bytes
        requests.append(RequestReport(row, tokens, policies, kept, rec, full, kept_b, alloc))
    mem = cache.memory()
    return Report(requests, mem["metadata"], mem["kv_allocated"])
