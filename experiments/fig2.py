"""Fig. 2 of the letter: accuracy against modes and width, pattern geometry across layers.

    python -m experiments.fig2 [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

(a) test error over training; (b) accuracy against p, 1L2P and 1L1P; (c) least p against the
width N of 784-N-N-10 with its ln N law; (d) pattern dispersion per layer; (e-f) subspace
overlap per hidden layer of seven-layer networks. Every comparison is made against both
baselines: standard BP and the authors' (``bp_fanin``). Details, settings and wall times:
experiments/configs/fig2.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax import analysis
from experiments import common
from experiments.configs.fig2 import QUICK, Fig2Settings

LABELS = {"bp": "BP", "bp_fanin": "BP / sqrt(N) (authors')", "mdl": "MDL 1L2P", "mdl_1l1p": "MDL 1L1P"}


def run(settings: Fig2Settings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s = time.perf_counter(), settings
    def train(widths, method, tag="", **kw):
        return common.train_grid(out, "-".join(map(str, widths)) + "_" + method + tag, data, widths, method, seeds=range(s.seeds),
                                 lr=s.lr, epochs=s.epochs, lr_halving_epochs=s.lr_halving_epochs,
                                 weight_decay=s.weight_decay_1l2p if method == "mdl" else s.weight_decay, **kw)
    final = lambda grid: grid.test_accuracy[-s.last_epochs:].mean(0)  # per run
    spread = lambda a: {"mean": np.mean(a, 0), "std": np.std(a, 0)}
    count = lambda method, p=None: mdl_jax.param_count(mdl_jax.make_spec((784, 100, 100, 10), p, method))
    results: dict = {"settings": dataclasses.asdict(s), "a_test_error": {}, "b_accuracy_vs_p": {}}
    for method in (*s.baselines, "mdl", "mdl_1l1p"):  # (a, b): 784-100-100-10
        grid = train((784, 100, 100, 10), method, modes=sorted({*s.modes, *s.trajectory_modes}) if "mdl" in method else [None])
        if method in s.baselines:
            results["a_test_error"][method] = spread(1 - grid.test_accuracy.T)
            results["b_accuracy_vs_p"][method] = {**spread(final(grid)), "params": count(method)}
            continue
        by_p = common.by_modes(grid, final(grid))
        results["b_accuracy_vs_p"][method] = {str(p): {**spread(by_p[p]), "param_fraction": count(method, p) / count("bp")} for p in s.modes}
        if method == "mdl":
            errors = common.by_modes(grid, 1 - grid.test_accuracy.T)
            results["a_test_error"].update({f"mdl_p{p}": spread(errors[p]) for p in s.trajectory_modes})
    least, accuracy = {b: {} for b in s.baselines}, {}  # (c): 784-N-N-10
    for n in s.widths:
        grid = train((784, n, n, 10), "mdl", "_width_modes", modes=[p for p in s.width_modes if p <= n])  # p > N: nothing new
        by_p = common.by_modes(grid, final(grid))
        accuracy[str(n)] = {str(p): a.mean() for p, a in by_p.items()}
        for b in s.baselines:
            reference = final(train((784, n, n, 10), b))
            least[b][str(n)] = analysis.least_modes(list(by_p), np.stack(list(by_p.values())), reference)
            accuracy[str(n)][b] = reference.mean()
    results.update(least_modes=least, least_modes_fit={b: analysis.fit_least_modes(v) for b, v in least.items()},
                   c_accuracy_by_p=accuracy)
    grid = train((784, 100, 100, 100, 10), "mdl", modes=[s.deep_modes])  # (d)
    results["d_dispersion_by_layer"] = spread(np.stack([jax.vmap(analysis.pattern_dispersion)(xh) for xh in grid.params["xi_hat"]], 1))
    x, y, overlap = jnp.asarray(data.test_images), jnp.asarray(data.test_labels), {}  # (e-f): seven layers of width 100
    for method in ("mdl", *s.baselines):
        grid = train((784,) + (100,) * 5 + (10,), method, modes=[s.deep_modes] if method == "mdl" else [None])
        overlap[method] = spread(jax.vmap(lambda p: analysis.layer_overlaps(p, grid.spec, x, y, 10, dim=s.overlap_dim))(grid.params))
        results.setdefault("ef_accuracy", {})[method] = spread(final(grid))
    results.update(overlap={m: o["mean"] for m, o in overlap.items()}, overlap_std={m: o["std"] for m, o in overlap.items()},
                   wall_time_s=time.perf_counter() - start)
    common.save(out, "fig2", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    baselines, panel = results["settings"]["baselines"], results["b_accuracy_vs_p"]
    for name, curve in results["a_test_error"].items():
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        epochs = np.arange(1, len(mean) + 1)
        axes[0, 0].plot(epochs, mean, label=LABELS.get(name, name.replace("mdl_p", "MDL p = ")))
        axes[0, 0].fill_between(epochs, mean - std, mean + std, alpha=0.25)
    for method in ("mdl", "mdl_1l1p"):
        ps = sorted(panel[method], key=int)
        axes[0, 1].errorbar([int(p) for p in ps], [panel[method][p]["mean"] for p in ps], yerr=[panel[method][p]["std"] for p in ps],
                            marker="o", capsize=2, label=LABELS[method])
    for b, style, marker in zip(baselines, ("--", ":"), "os"):
        axes[0, 1].axhline(panel[b]["mean"], color="k", ls=style, label=LABELS[b])
        found, fit = sorted((int(n), p) for n, p in results["least_modes"][b].items() if p is not None), results["least_modes_fit"][b]
        if found:
            line = axes[0, 2].plot(*zip(*found), marker=marker, label=LABELS[b] + (
                f": {fit['slope']:.1f} ln N + {fit['intercept']:.1f}, R² {fit['r2']:.2f}" if fit else ""))[0]
            n = np.geomspace(found[0][0], found[-1][0], 50)
            if fit:
                axes[0, 2].plot(n, fit["slope"] * np.log(n) + fit["intercept"], "--", color=line.get_color())
    d = results["d_dispersion_by_layer"]
    axes[1, 0].errorbar(np.arange(1, len(d["mean"]) + 1), d["mean"], yerr=d["std"], marker="o", capsize=2)
    for ax, shown in ((axes[1, 1], ["mdl"]), (axes[1, 2], baselines)):
        for method in ("mdl", *baselines):
            mean, std = results["overlap"][method], results["overlap_std"][method]
            kw = dict(marker="o", capsize=2, yerr=std) if method in shown else dict(ls=":", color="gray")
            ax.errorbar(np.arange(1, len(mean) + 1), mean, label=LABELS[method], **kw)
    titles = ("(a) 784-100-100-10", "(b) accuracy against p", "(c) 784-N-N-10, against each baseline", "(d) 784-100-100-100-10, p = 30",
              "(e) MDL, 7 layers of width 100", "(f) baselines, 7 layers of width 100")
    labels = (("epoch", "test error"), ("modes p", "test accuracy (mean of last epochs)"), ("hidden width N", "least number of modes"),
              ("layer l", "dispersion of the xi_hat^l"), ("hidden layer", "subspace overlap"), ("hidden layer", "subspace overlap"))
    for ax, title, (x, y) in zip(axes.flat, titles, labels):
        ax.set(title=title, xlabel=x, ylabel=y)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0, 0].set(yscale="log"), axes[0, 2].set(xscale="log"), axes[1, 1].set(ylim=(0, 1.02)), axes[1, 2].set(ylim=(0, 1.02))
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig2Settings(), QUICK, "fig2", argv=argv)


if __name__ == "__main__":
    main()
