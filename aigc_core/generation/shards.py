"""Splitting a batch of n items into shards with deterministic per-shard seeds.

A shard is a contiguous range of item indices and its own seed, derived from the batch seed and
the shard index with numpy's SeedSequence (independent streams, no overlap between shards). The
plan depends only on (n, shards, seed), never on where or in which order shards run, so a batch
made on a Dask cluster equals the one made in-process, and a rerun regenerates a lost shard
exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Shard:
    index: int  # 0..k-1
    start: int  # global index of the shard's first item
    count: int  # items in the shard
    seed: int  # the shard's own seed

    @property
    def stop(self) -> int:
        return self.start + self.count

    def to_dict(self) -> dict:
        return asdict(self)


def shard_seed(seed: int, index: int) -> int:
    """A 63-bit seed for shard `index` of a batch seeded with `seed`."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and shard index must be >= 0, got seed={seed}, index={index}")
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & MAX_SEED)


def plan_shards(n: int, shards: int, seed: int) -> list[Shard]:
    """k shards covering items 0..n-1 exactly once; sizes differ by at most one."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= shards <= n:
        raise ValueError(f"shards must lie in [1, n={n}], got {shards}: use fewer shards")
    base, extra = divmod(n, shards)
    out, start = [], 0
    for j in range(shards):
        count = base + (1 if j < extra else 0)
        out.append(Shard(j, start, count, shard_seed(seed, j)))
        start += count
    return out


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"
