"""Training throughput of the MDL engine on this machine (a benchmark, not a test).

    python benchmarks/throughput.py --data-dir DIR [--json]

Measures, for 784-100-100-10 1L2P on full MNIST (batch 100, the letter's recipe):
one run (p = 30) and a 25-run sweep (5 seeds x p = 10, 20, 30, 40, 50) against plain-NumPy
implementations of the same step (the authors' dense-W formulation, and a factored one that
never forms W) and the machine's float32 matmul peak. The sweep is timed twice through
``mdl_jax.train``: as one program padded to p = 50 (``padded_sweep_*``), and split into
programs by mode count with ``max_padding`` (``--max-padding``, default 0.1; ``sweep_*``).
Each NumPy step is timed as one process at 1 and at all BLAS threads, and as one
single-threaded process per core at the same time (aggregate); ``sweep_vs_best_numpy``
compares the sweep with the best of these. ``sweep_padding_fraction`` is the share of the
executed FLOPs spent on padded modes. FLOPs are the matrix products of training (forward and
backward) plus the per-epoch test evaluation; ``useful`` counts each run's active modes,
``executed`` the padded ones. Epochs are timed after a first, untimed one (compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.common import machine, matmul_peak_gflops  # noqa: E402
from mdl_jax._layout import plan_layout, plan_programs, to_devices  # noqa: E402
from mdl_jax._train import _chunks, compiled_sweep_fns, mode_counts  # noqa: E402



def _blas_name() -> str:
    try:
        return str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
    except (AttributeError, KeyError, TypeError):
        return "unknown"

WIDTHS = (784, 100, 100, 10)


def epoch_flops(modes, n_train: int, n_test: int) -> float:
    """FLOPs of one epoch (training steps + test evaluation) of a run with these mode counts
    (``None``: the dense network), from :func:`mdl_jax.matmul_flops`."""
    flops = mdl_jax.matmul_flops(mdl_jax.make_spec(WIDTHS, tuple(int(p) for p in modes) if modes else None, "mdl" if modes else "bp"))
    return n_train * flops.training + n_test * flops.forward


def time_sweep(sweep: mdl_jax.Sweep, data: mdl_jax.DataArrays, timed_epochs: int, max_padding: float | None = None):
    """(compile_s of the padded program or None, seconds per epoch, test accuracy after the first
    epoch) of ``mdl_jax.train`` on all devices; the first epoch (compilation included) is not timed."""
    compile_s = None  # of the one padded program, when that is what is timed
    if max_padding is None:
        layout = plan_layout(np.asarray(sweep.runs.key), run_bytes=1, data_bytes=0)
        init, epoch_fn, _ = compiled_sweep_fns(sweep.recipe, layout.group_size)
        runs = to_devices(_chunks(sweep.runs, layout)[0], layout.run_sharding)
        start = time.perf_counter()
        epoch_fn.lower(init(runs), runs, to_devices(data, layout.replicated), jnp.int32(0)).compile()
        compile_s = time.perf_counter() - start
    stamps = []
    result = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=1 + timed_epochs, max_padding=max_padding,
                           on_epoch=lambda *_: stamps.append(time.perf_counter()))
    return compile_s, (stamps[-1] - stamps[0]) / timed_epochs, result.metrics.test_accuracy[0]


def executed_flops(sweep: mdl_jax.Sweep, max_padding: float | None, n_train: int, n_test: int) -> tuple[float, int]:
    """(executed FLOPs of one epoch, number of programs) of a sweep trained with ``max_padding``."""
    modes = mode_counts(sweep.runs)
    plan = plan_programs(modes, WIDTHS, max_padding=max_padding) if max_padding is not None else [np.arange(len(modes))]
    return sum(len(index) * epoch_flops(tuple(modes[index].max(0)), n_train, n_test) for index in plan), len(plan)


_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def numpy_processes(data_dir: str, *, processes: int, threads: int, dense: bool, steps: int) -> list[float]:
    """Samples/s of ``processes`` NumPy training processes run at the same time, each with
    ``threads`` BLAS threads (the thread count is set before NumPy loads its BLAS)."""
    env = {**os.environ, **{v: str(threads) for v in _THREAD_VARS}, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, str(Path(__file__).with_name("numpy_reference.py")), "--data-dir", data_dir,
               "--steps", str(steps), "--start-at", str(time.time() + 8.0)] + (["--dense"] if dense else [])
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [json.loads(w.communicate()[0].strip().splitlines()[-1])["samples_per_s"] for w in workers]


def numpy_baselines(data_dir: str, steps: int) -> dict:
    """The NumPy step at 1 and at all BLAS threads in one process, and one single-threaded
    process per core (aggregate), for the authors' dense formulation and the factored one."""
    cores = os.cpu_count()
    out = {}
    for name, dense in (("numpy", True), ("numpy_factored", False)):
        out[f"{name}_1_thread_samples_per_s"] = numpy_processes(data_dir, processes=1, threads=1, dense=dense, steps=steps)[0]
        out[f"{name}_all_threads_samples_per_s"] = numpy_processes(data_dir, processes=1, threads=cores, dense=dense, steps=steps)[0]
        out[f"{name}_process_per_core_samples_per_s"] = sum(numpy_processes(data_dir, processes=cores, threads=1, dense=dense, steps=steps))
    best = max(out, key=out.get)
    return {**out, "numpy_best": best, "numpy_best_samples_per_s": out[best]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(mdl_jax.DATA_DIR_ENV))
    parser.add_argument("--timed-epochs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sweep-seeds", type=int, default=5, help="seeds of the sweep (x 5 mode counts)")
    parser.add_argument("--numpy-steps", type=int, default=600, help="timed steps of each NumPy process")
    parser.add_argument("--max-padding", type=float, default=0.1,
                        help="the sweep is split into programs by mode count so that padding is at most this share")
    parser.add_argument("--cpu-devices", type=int, help="split the CPU into N devices; the sweep is sharded over them")
    parser.add_argument("--n-train", type=int, help="train on the first N images only (a quick check of the benchmark itself)")
    parser.add_argument("--no-numpy", action="store_true", help="leave out the NumPy baselines (e.g. on a GPU machine)")
    args = parser.parse_args()
    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    dataset = mdl_jax.load_dataset("mnist", args.data_dir)
    if args.n_train:
        dataset = dataset._replace(train_images=dataset.train_images[:args.n_train], train_labels=dataset.train_labels[:args.n_train])
    data = mdl_jax.data_arrays(dataset)
    n_train = (len(dataset.train_labels) // 100) * 100
    n_test = len(dataset.test_labels)
    peak = matmul_peak_gflops()

    single = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[30], seeds=[0], learning_rates=[3e-3])
    single_compile, single_epoch, single_first = time_sweep(single, data, args.timed_epochs)
    single_gflops = epoch_flops((30, 30, 30), n_train, n_test) / single_epoch / 1e9

    sweep = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[10, 20, 30, 40, 50], seeds=range(args.sweep_seeds), learning_rates=[3e-3])
    useful = sum(epoch_flops(info.modes, n_train, n_test) for info in sweep.infos)
    padded_compile, padded_epoch, _ = time_sweep(sweep, data, args.timed_epochs)
    padded_executed, _ = executed_flops(sweep, None, n_train, n_test)
    _, sweep_epoch, _ = time_sweep(sweep, data, args.timed_epochs, args.max_padding)
    executed, programs = executed_flops(sweep, args.max_padding, n_train, n_test)

    results = {
        "machine": machine()["name"],
        "devices": len(jax.devices()),
        "jax": jax.__version__,
        "single_run_samples_per_s": n_train / single_epoch,
        "sweep_runs": len(sweep.infos),
        "sweep_max_padding": args.max_padding,
        "sweep_programs": programs,
        "sweep_samples_per_s": len(sweep.infos) * n_train / sweep_epoch,
        "padded_sweep_samples_per_s": len(sweep.infos) * n_train / padded_epoch,
        "load_before_numpy": os.getloadavg()[0],
        "matmul_peak_gflops": peak,
        "single_run_gflops": single_gflops,
        "sweep_gflops": useful / sweep_epoch / 1e9,
        "sweep_executed_gflops": executed / sweep_epoch / 1e9,
        "single_run_fraction_of_peak": single_gflops / peak,
        "sweep_fraction_of_peak": useful / sweep_epoch / 1e9 / peak,
        "padded_sweep_fraction_of_peak": useful / padded_epoch / 1e9 / peak,
        "padded_sweep_executed_gflops": padded_executed / padded_epoch / 1e9,
        "compile_s": padded_compile,
        "single_run_compile_s": single_compile,
        "epoch_test_accuracy": float(single_first[0]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    results["sweep_padding_fraction"] = 1 - useful / executed
    results["padded_sweep_padding_fraction"] = 1 - useful / padded_executed
    if not args.no_numpy:
        results |= {**numpy_baselines(args.data_dir, args.numpy_steps), "numpy_blas": _blas_name()}
        results["speedup_single_vs_numpy"] = results["single_run_samples_per_s"] / results["numpy_1_thread_samples_per_s"]
        results["sweep_vs_best_numpy"] = results["sweep_samples_per_s"] / results["numpy_best_samples_per_s"]
        results["padded_sweep_vs_best_numpy"] = results["padded_sweep_samples_per_s"] / results["numpy_best_samples_per_s"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
