"""Wall time of LeNet-5 training steps: dense against MDL at DLRT's ranks (a benchmark, not a test).

    python benchmarks/lenet.py --data-dir DIR [--runs 5] [--steps 50] [--repeats 3] [--json]

Each configuration is one compiled sweep of ``--runs`` seeds (the programs of
``experiments/vs_dlrt.py``: SGD, batch 128), timed over one epoch of ``--steps`` minibatches
(test evaluation on 1,000 images included) after an untimed first epoch (compilation); the
configurations take turns ``--repeats`` times and the best time of each is kept. Reported: the
time per run and step, its ratio to the dense model's, and the ratio of matrix-product FLOPs of
a training step (forward and backward, counted from the shapes). ``dense (lax.conv)`` is the
dense model with Flax's ``nnx.Conv`` (``lax.conv_general_dilated``) instead of the patches
product of ``mdl_jax.nn.Conv``: under ``vmap`` over runs its kernel gradient is a grouped
convolution, the slowdown ``mdl_jax.nn.conv_as_matmul`` avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).parents[1]))

import mdl_jax  # noqa: E402
from mdl_jax._train import compiled_sweep_fns, data_arrays  # noqa: E402
from experiments import models  # noqa: E402
from experiments.common import machine  # noqa: E402

RANKS = {"dense": None, "p=10,20,48": (10, 20, 48), "p=8,8,15": (8, 8, 15), "p=2,2,3": (2, 2, 3)}
#: (positions, fan-in, fan-out) of LeNet-5's layers on 28x28 inputs: the two convolutions, the dense layers.
LAYERS = ((24 * 24, 25, 20), (8 * 8, 500, 50), (1, 800, 500), (1, 500, 10))


class LaxLeNet(models.LeNet5):
    """The dense LeNet-5 with ``nnx.Conv`` (``lax.conv_general_dilated``) convolutions."""

    def __init__(self, key, spec, dtype):
        super().__init__(key, spec, dtype, modes=False)
        conv = lambda a, b, l: nnx.Conv(a, b, (5, 5), padding="VALID", param_dtype=dtype,
                                        rngs=nnx.Rngs(jax.random.fold_in(key, l)))
        self.conv0, self.conv1 = conv(1, 20, 0), conv(20, 50, 1)


def step_flops(ranks) -> float:
    """Matrix-product FLOPs of one training example (forward 2 m n per product, backward twice that)."""
    total = 0.0
    for l, (positions, fan_in, fan_out) in enumerate(LAYERS):
        p = None if ranks is None or l == 3 else ranks[l]
        macs = fan_in * fan_out if p is None else p * (fan_in + fan_out)
        total += 6 * positions * macs
    return total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(mdl_jax.DATA_DIR_ENV))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    models.register()
    mdl_jax.register_method(mdl_jax.nn.flax_method("lenet_lax", LaxLeNet, modes=False), replace=True)
    data = mdl_jax.load_dataset("mnist", args.data_dir)
    n = args.steps * 128
    data = data._replace(train_images=data.train_images[:n], train_labels=data.train_labels[:n],
                         test_images=data.test_images[:1000], test_labels=data.test_labels[:1000])
    arrays = data_arrays(data)
    configs = {"dense (lax.conv)": ("lenet_lax", None)} | {
        name: ("lenet_plain" if r is None else "lenet_modes", r) for name, r in RANKS.items()}
    programs = {}
    for name, (method, ranks) in configs.items():
        sweep = mdl_jax.build_sweep(models.LENET_WIDTHS, method, modes=[None if ranks is None else list(ranks)],
                                    seeds=range(args.runs), batch_size=128, optimizer="sgd", learning_rates=[0.05],
                                    weight_decay=0.0)
        init, epoch, _ = compiled_sweep_fns(sweep.recipe, 1)
        state = init(sweep.runs)
        state, metrics = epoch(state, sweep.runs, arrays, jnp.int32(0))  # compiles
        jax.block_until_ready(metrics)
        programs[name] = [epoch, state, sweep.runs]
    best = {name: np.inf for name in configs}
    for _ in range(args.repeats):
        for name, program in programs.items():
            epoch, state, runs = program
            start = time.perf_counter()
            state, metrics = epoch(state, runs, arrays, jnp.int32(1))
            jax.block_until_ready(metrics)
            best[name] = min(best[name], time.perf_counter() - start)
            program[1] = state
    per_step = {name: t / args.steps / args.runs for name, t in best.items()}
    dense = per_step["dense"]
    results = {
        "machine": f"{machine()['name']}, JAX {jax.__version__}",
        "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "steps": args.steps, "batch": 128,
        "load_before": os.getloadavg()[0],
        "configs": {name: {"ms_per_run_step": 1e3 * per_step[name], "time_vs_dense": per_step[name] / dense,
                           "flops_vs_dense": step_flops(configs[name][1]) / step_flops(None)} for name in configs},
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results["configs"].items():
            print(f"{name:>18}: {r['ms_per_run_step']:.2f} ms per run and step, {r['time_vs_dense']:.2f}x dense time, "
                  f"{r['flops_vs_dense']:.2f}x dense FLOPs")
    return results


if __name__ == "__main__":
    main()
