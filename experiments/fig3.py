"""Fig. 3 of the letter: which modes matter. 784-100-100-10, 1L1P, p = 70.

    python -m experiments.fig3 [--quick] [--out DIR] [--data-dir DIR]

(a) Test accuracy as a growing fraction of one layer's modes is switched off: weakest tau
first (the letter's text), smallest |sigma| first (the authors' notebook) and uniformly random
order (10 random orders), each weight layer, averaged over the trained networks. (b) The mode
measure tau (and its parts gamma ||xi||, gamma ||xi_hat||, |sigma|) against rank, with two
line pairs in log-log: the authors' fixed split (ranks 1-10 and 11-p, ``tau_fixed_split``) and
a fitted break (``tau_fitted_break``, a robustness check), and the accuracy left when only the
modes before the fitted break, or only those after it, are kept.

Full settings: 10 networks, 150 epochs, the authors' lr 0.01 halving every 30 epochs.
--quick (2 networks, 2 epochs): about 1 minute on 2 CPU cores.
Writes DIR/fig3.png, fig3.pdf, config.json, results.json.
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
from experiments.configs.fig3 import QUICK, Fig3Settings


def run(settings: Fig3Settings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    s = settings
    widths = (784, 100, 100, 10)
    grid = common.train_grid(out, "mdl_1l1p", data, widths, "mdl_1l1p", modes=[s.modes], **s.recipe())
    x, y = jnp.asarray(data.test_images), jnp.asarray(data.test_labels)
    fractions = jnp.linspace(0.0, 1.0, s.fractions)
    keys = jnp.stack([jax.random.PRNGKey(r) for r in range(len(grid.runs))])  # run r's random orders
    studies = [analysis.mode_study(grid.params, grid.spec, x, y, layer=layer, fractions=fractions, keys=keys,
                                   draws=s.random_draws, split=s.fixed_split) for layer in range(grid.spec.num_layers)]
    results = {
        "settings": dataclasses.asdict(s), "fractions": fractions,
        "test_accuracy": common.spread(grid.final()),
        "a_removal": {str(l): study.removal for l, study in enumerate(studies)},
        "b_spectrum": {str(l): study.spectrum for l, study in enumerate(studies)},
        "tau_fixed_split": studies[0].spectrum["fixed_split"], "tau_fitted_break": studies[0].spectrum["fit"],
        "wall_time_s": time.perf_counter() - start,
    }
    common.save(out, "fig3", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    layers = sorted(results["a_removal"], key=int)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    fractions = np.asarray(results["fractions"])
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(layers)))
    for layer, color in zip(layers, colors):
        r = results["a_removal"][layer]
        axes[0].plot(fractions, r["weakest_first"]["mean"], "-", color=color, label=f"layer {int(layer) + 1}, weakest tau first")
        axes[0].plot(fractions, r["smallest_sigma_first"]["mean"], ":", color=color, label=f"layer {int(layer) + 1}, smallest |sigma| first")
        axes[0].plot(fractions, r["random"]["mean"], "--", color=color, label=f"layer {int(layer) + 1}, random")
    axes[0].set(xlabel="fraction of modes removed", ylabel="test accuracy", title="(a) removing modes, 1L1P p = 70")
    axes[0].legend(fontsize=7)
    for layer, color in zip(layers, colors):
        spectrum = results["b_spectrum"][layer]
        tau = np.asarray(spectrum["tau_by_rank"])
        rank = np.arange(1, len(tau) + 1)
        fit, fixed = spectrum["fit"], spectrum["fixed_split"]
        axes[1].loglog(rank, tau, "o", ms=3, color=color, label=f"layer {int(layer) + 1}: slopes {fixed['head_slope']:.2f} / "
                       f"{fixed['tail_slope']:.2f} split at {fixed['split']}; fitted break {fit['break_rank']}")
    axes[1].set(xlabel="rank", ylabel="tau", title="(b) mode measure against rank")
    axes[1].legend(fontsize=7)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig3Settings(), QUICK, "fig3", argv=argv)


if __name__ == "__main__":
    main()
