"""Where the runs of a sweep live: seed groups, device sharding, chunks, padding.

A sweep of ``R = S x C`` runs is ``S`` seed groups of ``C`` runs each (runs of one group share
their minibatches). The groups are placed on a 1-d device mesh by sharding the run axis
(``NamedSharding``), ``G`` groups per chunk with ``G`` a multiple of the device count; a
sweep larger than memory is trained chunk by chunk. Missing groups (to fill the devices or the
last chunk) are copies of the last real group, trained and then dropped, so every chunk has
the same shapes and one compiled program serves them all.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class Layout(NamedTuple):
    """Placement of ``num_runs`` runs (``group_size`` per seed group) on devices and chunks."""

    num_runs: int
    group_size: int  # C
    groups_per_chunk: int  # G, a multiple of the device count
    num_chunks: int
    mesh: Mesh

    @property
    def chunk_runs(self) -> int:
        return self.groups_per_chunk * self.group_size

    @property
    def padded_runs(self) -> int:
        return self.num_chunks * self.chunk_runs

    def padding_index(self) -> np.ndarray:
        """Run index that each padded slot copies: real runs first, then the last group again."""
        groups = self.num_runs // self.group_size
        slot_group = np.minimum(np.arange(self.padded_runs) // self.group_size, groups - 1)
        return slot_group * self.group_size + np.arange(self.padded_runs) % self.group_size

    @property
    def run_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("runs"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def seed_groups(keys: np.ndarray) -> int:
    """Size C of the seed groups: runs ``g*C .. g*C + C - 1`` share one key. 1 if not so laid out."""
    keys = np.asarray(keys).reshape(len(keys), -1)
    num_runs, streams = len(keys), len(np.unique(keys, axis=0))
    if num_runs % streams:
        return 1
    blocks = keys.reshape(streams, num_runs // streams, -1)
    return num_runs // streams if (blocks == blocks[:, :1]).all() else 1


def memory_budget_bytes(device: jax.Device) -> int:
    """Half the memory of ``device`` (its allocator limit, or the host's RAM for a CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def plan_layout(
    keys: np.ndarray, *, run_bytes: int, data_bytes: int, devices=None, max_runs_per_chunk: int | None = None,
) -> Layout:
    """Chooses the groups per chunk from a per-run memory estimate, or from a user limit.

    Args:
      keys: the runs' PRNG keys, ``(R, 2)``: they define the seed groups.
      run_bytes: estimated device memory of one run while it trains.
      data_bytes: memory of the (replicated) dataset on each device.
      devices: devices to use (default: all devices, of every process). In a single process,
        only the fewest of them that reach the least number of groups per device are used.
      max_runs_per_chunk: at most this many runs on the devices at once (default: as many as
        half of a device's memory holds, per device).
    """
    devices = list(devices if devices is not None else jax.devices())
    group_size = seed_groups(keys)
    groups = len(keys) // group_size
    if jax.process_count() == 1:  # the fewest devices that give the least load per device
        load = math.ceil(groups / len(devices))
        devices = devices[: next(n for n in range(1, len(devices) + 1) if math.ceil(groups / n) == load)]
    if max_runs_per_chunk is None:
        local = next(d for d in devices if d.process_index == jax.process_index())  # only its own memory is visible
        per_device = max(memory_budget_bytes(local) - data_bytes, run_bytes) // run_bytes
        max_runs_per_chunk = per_device * len(devices)
    if max_runs_per_chunk < 1:
        raise ValueError(f"max_runs_per_chunk must be >= 1, got {max_runs_per_chunk}")
    groups_fit = max(max_runs_per_chunk // group_size, 1)
    per_chunk = max(len(devices), groups_fit // len(devices) * len(devices))
    per_chunk = min(per_chunk, math.ceil(groups / len(devices)) * len(devices))
    mesh = Mesh(np.asarray(devices), ("runs",))
    return Layout(len(keys), group_size, per_chunk, math.ceil(groups / per_chunk), mesh)


def to_devices(tree: Any, sharding: NamedSharding) -> Any:
    """Places host arrays under ``sharding`` (each process supplies the slices it holds)."""
    return jax.tree.map(
        lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda index: np.asarray(a)[index]), tree
    )


def to_host(tree: Any) -> Any:
    """Numpy copy of (possibly sharded, possibly multi-process) arrays, whole on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def plan_programs(modes: np.ndarray, widths, *, max_padding: float = 0.1) -> list[np.ndarray]:
    """Splits the runs of a sweep into programs by mode count, padding each to its own largest.

    One program pads every run to the sweep's largest mode counts, which wastes the FLOPs of
    the padded modes; one program per mode count wastes none but compiles once per count. The
    cost model: a run's FLOPs per example are proportional to ``sum_l p_l (N_l + N_{l+1})``
    (every product of a mode layer), and each program costs one compilation. The plan is the
    fewest programs whose padded FLOPs are at most ``max_padding`` of the executed ones, and of
    those the one with the least padding; runs are grouped in order of their FLOPs.

    Args:
      modes: ``(R, L)`` active mode counts of every run and weight layer.
      widths: ``(N_0, ..., N_L)``.
      max_padding: the largest share of executed FLOPs that may be padding.

    Returns:
      The run indices of each program (in run order), smallest programs first.
    """
    modes = np.asarray(modes, np.int64).reshape(len(modes), -1)
    weight = np.asarray(widths[:-1]) + np.asarray(widths[1:])
    distinct, inverse, counts = np.unique(modes, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(distinct @ weight, kind="stable")
    distinct, counts = distinct[order], counts[order]
    n, useful = len(distinct), float(counts @ (distinct @ weight))

    def executed(i: int, j: int) -> float:  # runs of distinct[i:j] padded to their largest
        return float(counts[i:j].sum() * (distinct[i:j].max(0) @ weight))

    best = {0: (0.0, ())}  # best[j]: least executed FLOPs of distinct[:j] in k programs, cuts
    for _ in range(n):
        best = {j: min((best[i][0] + executed(i, j), best[i][1] + (i,)) for i in best if i < j) for j in range(1, n + 1)
                if any(i < j for i in best)}
        if n in best and 1 - useful / best[n][0] <= max_padding + 1e-12:
            break
    cuts = list(best[n][1][1:]) + [n]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    program_of = np.searchsorted(cuts, rank[inverse.reshape(-1)], side="right")
    return [np.flatnonzero(program_of == k) for k in range(len(cuts))]
