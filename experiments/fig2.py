"""Fig. 2 of the letter: accuracy against modes and width, pattern geometry across layers.

    python -m experiments.fig2 [--quick] [--out DIR] [--data-dir DIR]

(a) test error over training, 784-100-100-10, MDL p = 20, 30 and BP; (b) test accuracy against
p for 1L2P and 1L1P, with BP and the parameter fractions; (c) least number of modes against
the hidden width N of 784-N-N-10 (criterion: the least p whose mean accuracy is within one
seed-to-seed standard deviation of BP's), with a fit against ln N; (d) pattern dispersion per
layer, 784-100-100-100-10, p = 30; (e-f) subspace overlap of the class representations per
hidden layer, seven layers of width 100, MDL p = 30 against BP.

Full settings: the letter's (5 seeds, 150 epochs, lr 3e-3, halving every 50 epochs); hours on
a GPU, days on 2 CPU cores. --quick (2 seeds, 2 epochs, coarser grids): about 3 minutes on
2 CPU cores. Writes DIR/fig2.png, fig2.pdf, config.json, results.json.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax import analysis
from experiments import common
from experiments.configs.fig2 import QUICK, Fig2Settings


def run(settings: Fig2Settings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    s = settings
    seeds = range(s.seeds)
    recipe = {"lr_halving_epochs": s.lr_halving_epochs}
    def train(widths, method, **kw):
        name = "-".join(map(str, widths)) + "_" + method
        return common.train_grid(out, name, data, widths, method, seeds=seeds, lr=s.lr, epochs=s.epochs, **recipe, **kw)

    results: dict = {"settings": dataclasses.asdict(s)}

    # (a, b): 784-100-100-10
    base = (784, 100, 100, 10)
    bp = train(base, "bp")
    bp_final = bp.test_accuracy[-1]
    panel_b = {"bp": {"mean": bp_final.mean(), "std": bp_final.std(), "params": mdl_jax.param_count(mdl_jax.make_spec(base, None, "bp"))}}
    trajectories = {"bp": 1 - bp.test_accuracy.T}
    for method in ("mdl", "mdl_1l1p"):
        grid = train(base, method, modes=sorted(set(s.modes) | set(s.trajectory_modes)))
        finals = common.by_modes(grid, grid.test_accuracy[-1])
        panel_b[method] = {
            str(p): {"mean": acc.mean(), "std": acc.std(), "param_fraction": mdl_jax.param_count(mdl_jax.make_spec(base, p, method)) / panel_b["bp"]["params"]}
            for p, acc in finals.items() if p in s.modes
        }
        if method == "mdl":
            curves = common.by_modes(grid, 1 - grid.test_accuracy.T)
            trajectories.update({f"mdl_p{p}": curves[p] for p in s.trajectory_modes})
            mdl_at_30 = finals.get(30)
    results["a_test_error"] = {k: {"mean": v.mean(0), "std": v.std(0)} for k, v in trajectories.items()}
    results["b_accuracy_vs_p"] = panel_b
    if mdl_at_30 is not None:
        results["b_mdl_p30_minus_bp_points"] = 100 * (mdl_at_30.mean() - bp_final.mean())

    # (c): least number of modes against the width
    least = {}
    for n in s.widths:
        widths = (784, n, n, 10)
        bp_n = train(widths, "bp")
        grid = train(widths, "mdl", modes=[p for p in s.width_modes if p <= n])  # more modes than N span nothing new
        finals = common.by_modes(grid, grid.test_accuracy[-1])
        least[n] = {
            "least_p": analysis.least_modes(list(finals), np.stack(list(finals.values())), bp_n.test_accuracy[-1]),
            "bp_mean": bp_n.test_accuracy[-1].mean(),
            "accuracy_by_p": {str(p): a.mean() for p, a in finals.items()},
        }
    found = [(n, v["least_p"]) for n, v in least.items() if v["least_p"] is not None]
    fit = analysis.fit_log_growth(*zip(*found)) if len(found) >= 2 else None
    results["c_least_modes"] = {str(n): v for n, v in least.items()}
    results["c_log_fit"] = fit._asdict() if fit else None

    # (d): dispersion of the upstream patterns per layer, 784-100-100-100-10
    deep4 = (784, 100, 100, 100, 10)
    grid = train(deep4, "mdl", modes=[s.deep_modes])
    dispersion = np.asarray([
        [float(analysis.pattern_dispersion(mdl_jax.select_run(grid.params, r)["xi_hat"][l])) for l in range(4)]
        for r in range(len(grid.runs))
    ])
    results["d_dispersion_by_layer"] = {"mean": dispersion.mean(0), "std": dispersion.std(0)}

    # (e-f): subspace overlap per hidden layer, seven layers of width 100
    deep7 = (784,) + (100,) * 5 + (10,)
    x, y = jnp.asarray(data.test_images), jnp.asarray(data.test_labels)
    overlaps = {}
    for method in ("mdl", "bp"):
        grid = train(deep7, method, modes=[s.deep_modes] if method == "mdl" else [None])
        overlaps[method] = np.asarray([
            analysis.layer_overlaps(mdl_jax.select_run(grid.params, r), grid.spec, x, y, 10, dim=s.overlap_dim)
            for r in range(len(grid.runs))
        ])
        overlaps[method + "_accuracy"] = grid.test_accuracy[-1]
    results["ef_subspace_overlap"] = {m: {"mean": overlaps[m].mean(0), "std": overlaps[m].std(0)} for m in ("mdl", "bp")}
    results["ef_accuracy"] = {m: overlaps[m + "_accuracy"].mean() for m in ("mdl", "bp")}
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "fig2", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), constrained_layout=True)
    ax = axes[0, 0]
    for name, curve in results["a_test_error"].items():
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        epochs = np.arange(1, len(mean) + 1)
        ax.plot(epochs, mean, label=name.replace("mdl_p", "MDL p = ").replace("bp", "BP"))
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
    ax.set(xlabel="epoch", ylabel="test error", yscale="log", title="(a) 784-100-100-10")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    panel = results["b_accuracy_vs_p"]
    for method, label in (("mdl", "MDL 1L2P"), ("mdl_1l1p", "MDL 1L1P")):
        ps = sorted(int(p) for p in panel[method])
        ax.errorbar(ps, [panel[method][str(p)]["mean"] for p in ps], yerr=[panel[method][str(p)]["std"] for p in ps], marker="o", label=label, capsize=2)
    ax.axhline(panel["bp"]["mean"], color="k", ls="--", label="BP")
    ax.set(xlabel="modes p", ylabel="test accuracy", title="(b) accuracy against p")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    least = results["c_least_modes"]
    ns = [int(n) for n in least if least[n]["least_p"] is not None]
    ax.plot(ns, [least[str(n)]["least_p"] for n in ns], "o-", label="least p")
    if results["c_log_fit"]:
        fit = results["c_log_fit"]
        grid = np.geomspace(min(ns), max(ns), 50)
        ax.plot(grid, fit["slope"] * np.log(grid) + fit["intercept"], "--", label=f"{fit['slope']:.1f} ln N + {fit['intercept']:.1f} (R² {fit['r2']:.2f})")
    ax.set(xscale="log", xlabel="hidden width N", ylabel="least number of modes", title="(c) 784-N-N-10")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    d = results["d_dispersion_by_layer"]
    ax.errorbar(np.arange(1, len(d["mean"]) + 1), d["mean"], yerr=d["std"], marker="o", capsize=2)
    ax.set(xlabel="layer l", ylabel="dispersion of the xi_hat^l", title="(d) 784-100-100-100-10, p = 30")
    for ax, method in ((axes[1, 1], "mdl"), (axes[1, 2], "bp")):
        o = results["ef_subspace_overlap"][method]
        ax.errorbar(np.arange(1, len(o["mean"]) + 1), o["mean"], yerr=o["std"], marker="o", capsize=2, label=method.upper())
        other = results["ef_subspace_overlap"]["bp" if method == "mdl" else "mdl"]
        ax.plot(np.arange(1, len(other["mean"]) + 1), other["mean"], ":", color="gray", label=("BP" if method == "mdl" else "MDL"))
        ax.set(xlabel="hidden layer", ylabel="subspace overlap", ylim=(0, 1.02), title=f"({'e' if method == 'mdl' else 'f'}) {method.upper()}, 7 layers")
        ax.legend(fontsize=8)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig2Settings(), QUICK, "fig2", argv=argv)


if __name__ == "__main__":
    main()
