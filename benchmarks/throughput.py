"""Training throughput of the MDL engine on this machine (a benchmark, not a test).

    python benchmarks/throughput.py --data-dir DIR [--json]

Measures, for 784-100-100-10 1L2P on full MNIST (batch 100, the letter's recipe):
one run (p = 30) and a 25-run sweep (5 seeds x p = 10, 20, 30, 40, 50, one program) against
plain-NumPy implementations of the same step (the authors' dense-W formulation, and a
factored one that never forms W) and the machine's float32 matmul peak.
FLOPs are the matrix products of training (forward and backward) plus the per-epoch test
evaluation; ``useful`` counts each run's active modes, ``executed`` the padded ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax._layout import plan_layout, to_devices
from mdl_jax._train import _chunks, compiled_sweep_fns

from numpy_reference import NumpyMDL

WIDTHS = (784, 100, 100, 10)


def layer_flops(n_in: int, n_out: int, p: int | None, *, first: bool) -> tuple[int, int]:
    """(forward, training) matrix-product FLOPs per example of one layer; p None = dense."""
    if p is None:
        forward = 2 * n_in * n_out
        return forward, forward * (2 if first else 3)
    forward = 2 * p * (n_in + n_out)
    backward = 4 * p * n_out + 2 * p * n_in + (0 if first else 2 * p * n_in)
    return forward, forward + backward


def epoch_flops(modes, n_train: int, n_test: int) -> float:
    """FLOPs of one epoch (training steps + test evaluation) of a run with these mode counts."""
    total = 0.0
    for l, (n_in, n_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        forward, train = layer_flops(n_in, n_out, modes[l] if modes else None, first=l == 0)
        total += n_train * train + n_test * forward
    return total


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def time_sweep(sweep: mdl_jax.Sweep, data: mdl_jax.DataArrays, timed_epochs: int):
    """(compile_s, seconds per epoch, test accuracy after the first epoch), on all devices."""
    layout = plan_layout(np.asarray(sweep.runs.key), run_bytes=1, data_bytes=0)
    init, epoch_fn, _ = compiled_sweep_fns(sweep.recipe, layout.group_size)
    runs = to_devices(_chunks(sweep.runs, layout)[0], layout.run_sharding)
    data = to_devices(data, layout.replicated)
    state = init(runs)
    start = time.perf_counter()
    epoch_fn.lower(state, runs, data, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start
    state, metrics = epoch_fn(state, runs, data, jnp.int32(0))
    first_accuracy = np.asarray(metrics.test_accuracy)
    start = time.perf_counter()
    for epoch in range(1, 1 + timed_epochs):
        state, metrics = epoch_fn(state, runs, data, jnp.int32(epoch))
        jax.device_get(metrics)
    return compile_s, (time.perf_counter() - start) / timed_epochs, first_accuracy


def numpy_samples_per_s(dataset: mdl_jax.Dataset, *, dense: bool, steps: int = 60) -> float:
    net = NumpyMDL(WIDTHS, 30, dense=dense)
    onehot = np.eye(10, dtype=np.float32)[dataset.train_labels]
    net.step(dataset.train_images[:100], onehot[:100], 3e-3)
    start = time.perf_counter()
    for s in range(steps):
        batch = slice(100 * s, 100 * (s + 1))
        net.step(dataset.train_images[batch], onehot[batch], 3e-3)
    return steps * 100 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(mdl_jax.DATA_DIR_ENV))
    parser.add_argument("--timed-epochs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sweep-seeds", type=int, default=5, help="seeds of the sweep (x 5 mode counts)")
    parser.add_argument("--cpu-devices", type=int, help="split the CPU into N devices; the sweep is sharded over them")
    args = parser.parse_args()
    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    dataset = mdl_jax.load_dataset("mnist", args.data_dir)
    data = mdl_jax.data_arrays(dataset)
    n_train = (len(dataset.train_labels) // 100) * 100
    n_test = len(dataset.test_labels)
    peak = matmul_peak_gflops()

    single = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[30], seeds=[0], learning_rates=[3e-3])
    single_compile, single_epoch, single_first = time_sweep(single, data, args.timed_epochs)
    single_gflops = epoch_flops((30, 30, 30), n_train, n_test) / single_epoch / 1e9

    sweep = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[10, 20, 30, 40, 50], seeds=range(args.sweep_seeds), learning_rates=[3e-3])
    sweep_compile, sweep_epoch, _ = time_sweep(sweep, data, args.timed_epochs)
    useful = sum(epoch_flops(info.modes, n_train, n_test) for info in sweep.infos)
    executed = len(sweep.infos) * epoch_flops(sweep.recipe.spec.modes, n_train, n_test)

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}",
        "devices": len(jax.devices()),
        "jax": jax.__version__,
        "single_run_samples_per_s": n_train / single_epoch,
        "sweep_runs": len(sweep.infos),
        "sweep_samples_per_s": len(sweep.infos) * n_train / sweep_epoch,
        "numpy_samples_per_s": numpy_samples_per_s(dataset, dense=True),
        "numpy_factored_samples_per_s": numpy_samples_per_s(dataset, dense=False),
        "matmul_peak_gflops": peak,
        "single_run_gflops": single_gflops,
        "sweep_gflops": useful / sweep_epoch / 1e9,
        "sweep_executed_gflops": executed / sweep_epoch / 1e9,
        "single_run_fraction_of_peak": single_gflops / peak,
        "sweep_fraction_of_peak": useful / sweep_epoch / 1e9 / peak,
        "compile_s": sweep_compile,
        "single_run_compile_s": single_compile,
        "epoch_test_accuracy": float(single_first[0]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    results["speedup_single_vs_numpy"] = results["single_run_samples_per_s"] / results["numpy_samples_per_s"]
    results["speedup_sweep_vs_numpy"] = results["sweep_samples_per_s"] / results["numpy_samples_per_s"]
    results["speedup_sweep_vs_numpy_factored"] = (
        results["sweep_samples_per_s"] / results["numpy_factored_samples_per_s"]
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
