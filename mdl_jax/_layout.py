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
