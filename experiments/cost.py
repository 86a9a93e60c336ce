"""Training cost against width: MDL against both baselines (the letter's abstract).

    python -m experiments.cost [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

For 784-N-N-10 at each width N, each network (``bp``, ``bp_fanin``, ``mdl`` at p = 30 and at
Fig. 2c's least p, ``mdl_1l1p``) is trained alone, one after another in one process, and we
record: trainable parameters; matrix-product FLOPs per training example (from the shapes,
:func:`mdl_jax.matmul_flops`); seconds per epoch (median over the epochs after the first, which
compiles; an epoch includes its test evaluation); the bytes XLA plans for one training step
(:func:`mdl_jax.step_memory`); and the time to the target test accuracy (the epochs it took
times the seconds per epoch). Then each ratio MDL / BP and a verdict per width, and the speed
of each matrix product of the hidden layer's step, alone, against the machine's matmul peak:
where the FLOP ratio does not become a wall-time ratio, these say which product holds it back.

Each network's numbers are stored as soon as it finishes (``networks/<name>_N<N>.json``);
``--resume`` continues a killed run from there. Settings: experiments/configs/cost.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from experiments import common
from experiments.configs.cost import QUICK, CostSettings

LABELS = {"bp": "BP", "bp_fanin": "BP / sqrt(N) (authors')", "mdl": "MDL 1L2P, p = {p}", "mdl_least": "MDL 1L2P, least p",
          "mdl_1l1p": "MDL 1L1P, p = {p}"}
QUANTITIES = ("params", "flops_per_sample", "epoch_s", "peak_bytes", "time_to_target_s")


def run(settings: CostSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s = time.perf_counter(), settings
    data = data._replace(train_images=data.train_images[: s.n_train], train_labels=data.train_labels[: s.n_train])
    peak, load = common.matmul_peak_gflops(), os.getloadavg()[0]
    cost: dict = {}
    for width in s.widths:
        for name, (method, modes) in s.networks(width).items():
            path = out / "networks" / f"{name}_N{width}.json"
            if not path.is_file():
                print(f"training {name} at N = {width}", flush=True)
                entry = measure(s, data, width, method, modes, peak)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(entry, indent=1) + "\n")
            cost.setdefault(name, {})[str(width)] = json.loads(path.read_text())
    products = {str(n): {name: product_rates(n, n, modes, peak) for name, (_, modes) in s.networks(n).items() if name != "bp_fanin"}
                for n in s.widths}
    results = {"settings": dataclasses.asdict(s), "cost": cost, "target_accuracy": s.target_accuracy,
               "ratios": ratios(cost), "verdict": verdicts(cost, s), "products": products,
               "machine": {**common.machine(), "matmul_peak_gflops": peak, "load_average_before": load},
               "wall_time_s": time.perf_counter() - start}
    common.save(out, "cost", results, settings, draw(results) if plot else None)
    return results


def measure(s: CostSettings, data: mdl_jax.Dataset, width: int, method: str, modes: int | None, peak: float) -> dict:
    """One network trained alone for ``s.epochs`` epochs, timed epoch by epoch."""
    sweep = mdl_jax.build_sweep((784, width, width, 10), method, modes=(modes,), seeds=(s.seed,), learning_rates=(s.lr,),
                                lr_halving_epochs=s.lr_halving_epochs, weight_decay=s.weight_decay_of(method))
    memory = mdl_jax.step_memory(sweep.recipe, mdl_jax.select_run(sweep.runs, 0))
    stamps = [time.perf_counter()]
    result = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=s.epochs, on_epoch=lambda *_: stamps.append(time.perf_counter()))
    times, accuracy = np.diff(stamps), result.metrics.test_accuracy[:, 0]
    epoch_s = float(np.median(times[1:]))
    reached = np.flatnonzero(accuracy >= s.target_accuracy)
    flops = mdl_jax.matmul_flops(sweep.recipe.spec)
    seen = len(data.train_labels) // sweep.recipe.batch_size * sweep.recipe.batch_size
    rate = (seen * flops.training + len(data.test_labels) * flops.forward) / epoch_s / 1e9
    return {
        "method": method, "modes": modes, "params": sweep.infos[0].param_count, "flops_per_sample": flops.training,
        "epoch_s": epoch_s, "first_epoch_s": float(times[0]), "epoch_times_s": times.tolist(),
        "epochs_to_target": int(reached[0]) + 1 if reached.size else None,
        "time_to_target_s": (int(reached[0]) + 1) * epoch_s if reached.size else None,
        "test_accuracy": accuracy.tolist(), "final_accuracy": float(accuracy[-1]),
        "peak_bytes": memory.peak_bytes, "state_bytes": memory.state_bytes, "temp_bytes": memory.temp_bytes,
        "gflops_per_s": rate, "peak_fraction": rate / peak, "load_average_after": os.getloadavg()[0],
    }


def product_rates(n_in: int, n_out: int, modes: int | None, peak: float, *, batch: int = 100) -> list[dict]:
    """GFLOP/s of each matrix product of a hidden layer's training step (``n_in -> n_out``, one
    minibatch), each timed alone as a scan of 32 products with fresh left operands."""
    if modes is None:  # W (n_in, n_out)
        products = {"h @ W": ((batch, n_in), (n_in, n_out), (1, 0)), "h^T @ dy (dW)": ((batch, n_in), (batch, n_out), (0, 0)),
                    "dy @ W^T (dh)": ((batch, n_out), (n_in, n_out), (1, 1))}
    else:  # xi_hat (n_in, p), xi (n_out, p)
        p = modes
        products = {"h @ xi_hat": ((batch, n_in), (n_in, p), (1, 0)), "z @ xi^T": ((batch, p), (n_out, p), (1, 1)),
                    "dy^T @ z (dxi)": ((batch, n_out), (batch, p), (0, 0)), "dy @ xi (dz)": ((batch, n_out), (n_out, p), (1, 0)),
                    "h^T @ dz (dxi_hat)": ((batch, n_in), (batch, p), (0, 0)), "dz @ xi_hat^T (dh)": ((batch, p), (n_in, p), (1, 1))}
    rows = []
    for name, (lhs, rhs, (a, b)) in products.items():
        dims = (((a,), (b,)), ((), ()))
        product = jax.jit(lambda stack, r: jax.lax.scan(lambda c, l: (c, jax.lax.dot_general(l, r, dims)), 0.0, stack)[1])
        stack, right = jnp.ones((32, *lhs), jnp.float32), jnp.ones(rhs, jnp.float32)
        product(stack, right).block_until_ready()
        best = min(_timed(lambda: product(stack, right).block_until_ready()) for _ in range(5)) / 32
        flops = 2 * np.prod(lhs) * np.prod(rhs) // rhs[b]
        rows.append({"product": name, "lhs": list(lhs), "rhs": list(rhs), "us": best * 1e6, "gflops_per_s": flops / best / 1e9,
                     "peak_fraction": flops / best / 1e9 / peak})
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratios(cost: dict) -> dict:
    """``{mdl network: {baseline: {N: {quantity: MDL / baseline}}}}`` (``None`` where one side
    never reached the target)."""
    out: dict = {}
    for mdl in (n for n in cost if n.startswith("mdl")):
        for base in (n for n in cost if n.startswith("bp")):
            for width, entry in cost[mdl].items():
                other = cost[base].get(width)
                if other is None:
                    continue
                out.setdefault(mdl, {}).setdefault(base, {})[width] = {
                    q: entry[q] / other[q] if entry[q] is not None and other[q] else None for q in QUANTITIES}
    return out


def verdicts(cost: dict, s: CostSettings) -> dict:
    """One line per width on the letter's claim, from the rules fixed before running: MDL saves
    training cost at N when an MDL network reaches the target accuracy in less time than every
    baseline that reaches it (a baseline that never does counts as slower); the per-epoch
    ratios are reported beside it either way."""
    out = {}
    for width in map(str, s.widths):
        bases = {n: cost[n][width] for n in cost if n.startswith("bp") and width in cost[n]}
        mdls = {n: cost[n][width] for n in cost if n.startswith("mdl") and width in cost[n]}
        if not bases or not mdls:
            continue
        fastest_base = min((e["time_to_target_s"] for e in bases.values() if e["time_to_target_s"] is not None), default=None)
        parts = []
        for name, e in mdls.items():
            step = ", ".join(f"{e['epoch_s'] / b['epoch_s']:.2f}x {base}'s epoch time" for base, b in bases.items())
            if e["time_to_target_s"] is None:
                parts.append(f"{name} (p = {e['modes']}) does not reach {s.target_accuracy:.0%} in {s.epochs} epochs ({step})")
            elif fastest_base is None:
                parts.append(f"{name} (p = {e['modes']}) reaches {s.target_accuracy:.0%} in {e['time_to_target_s']:.1f} s, no baseline does ({step})")
            else:
                parts.append(f"{name} (p = {e['modes']}) reaches {s.target_accuracy:.0%} in {e['time_to_target_s']:.1f} s, "
                             f"{e['time_to_target_s'] / fastest_base:.2f}x the fastest baseline's {fastest_base:.1f} s ({step})")
        saves = any(e["time_to_target_s"] is not None and (fastest_base is None or e["time_to_target_s"] < fastest_base) for e in mdls.values())
        out[width] = ("saves training cost: " if saves else "no saving in time to target: ") + "; ".join(parts)
    return out


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    cost, modes, target = results["cost"], results["settings"]["modes"], results["target_accuracy"]
    panels = (("params", "trainable parameters"), ("flops_per_sample", "matrix-product FLOPs per training example"),
              ("epoch_s", "seconds per epoch"), ("peak_bytes", "bytes of one training step (XLA)"),
              ("time_to_target_s", f"seconds to {target:.0%} test accuracy"), ("final_accuracy", "final test accuracy"))
    for ax, (quantity, ylabel) in zip(axes.flat, panels):
        for name, by_width in cost.items():
            points = sorted((int(n), e[quantity]) for n, e in by_width.items() if e[quantity] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", ls="--" if name.startswith("bp") else "-", label=LABELS[name].format(p=modes))
        ax.set(xscale="log", yscale="log" if quantity != "final_accuracy" else "linear", xlabel="hidden width N", ylabel=ylabel)
    axes[1, 1].set_title(f"missing point: {target:.0%} not reached", fontsize=8)
    axes[1, 2].axhline(target, color="gray", lw=0.8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"784-N-N-10 on MNIST, one run each, {results['machine']['name']}")
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, CostSettings(), QUICK, "cost", argv=argv)


if __name__ == "__main__":
    main()
