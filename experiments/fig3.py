"""Fig. 3 of the letter: which modes matter. 784-100-100-10, 1L1P, p = 70.

    python -m experiments.fig3 [--quick] [--out DIR] [--data-dir DIR]

(a) Test accuracy as a growing fraction of one layer's modes is switched off: weakest tau
first against uniformly random order (10 random orders), each weight layer, averaged over the
trained networks. (b) The mode measure tau (and its parts gamma ||xi||, gamma ||xi_hat||,
|sigma|) against rank, with a two-segment power-law fit in log-log (break rank and both
exponents estimated), and the accuracy left when only the leading or only the tail modes are
kept.

Full settings: the letter's (10 networks, 150 epochs, lr 5e-3 halving every 30 epochs).
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
    grid = common.train_grid(out, "mdl_1l1p", data, widths, "mdl_1l1p", modes=[s.modes], seeds=range(s.seeds), lr=s.lr,
                             epochs=s.epochs, lr_halving_epochs=s.lr_halving_epochs)
    x, y = jnp.asarray(data.test_images), jnp.asarray(data.test_labels)
    fractions = jnp.linspace(0.0, 1.0, s.fractions)
    keys = jnp.stack([jax.random.PRNGKey(r) for r in range(len(grid.runs))])  # run r's random orders
    half = int(np.argmin(np.abs(np.asarray(fractions) - 0.5)))
    removal, spectra = {}, {}
    for layer in range(grid.spec.num_layers):
        study = analysis.removal_study(grid.params, grid.spec, x, y, layer=layer, fractions=fractions, keys=keys,
                                       draws=s.random_draws)
        weakest, random = np.asarray(study.weakest_first), np.asarray(study.random).mean(-1)
        removal[layer] = {
            "weakest_first": {"mean": weakest.mean(0), "std": weakest.std(0)},
            "random": {"mean": random.mean(0), "std": random.std(0)},
            "gap_at_half_removed_points": 100 * float(weakest[:, half].mean() - random[:, half].mean()),
            "accuracy_at_half_removed_weakest_first": float(weakest[:, half].mean()),
        }
        mean_tau = np.asarray(study.tau).mean(0)
        fit = analysis.fit_two_power_laws(mean_tau)
        kept = np.asarray(analysis.accuracy_leading_and_tail(grid.params, grid.spec, x, y, layer=layer, rank=study.rank,
                                                             leading=fit.break_rank - 1))
        spectra[layer] = {
            "tau_by_rank": mean_tau, "parts_by_rank": np.asarray(study.parts).mean(0),
            "fit": fit._asdict(), "accuracy_leading_only": kept[:, 0].mean(), "accuracy_tail_only": kept[:, 1].mean(),
        }
    results = {
        "settings": dataclasses.asdict(s), "fractions": fractions,
        "test_accuracy": {"mean": grid.test_accuracy[-1].mean(), "std": grid.test_accuracy[-1].std()},
        "a_removal": {str(l): v for l, v in removal.items()},
        "b_spectrum": {str(l): v for l, v in spectra.items()},
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
        axes[0].plot(fractions, r["random"]["mean"], "--", color=color, label=f"layer {int(layer) + 1}, random")
    axes[0].set(xlabel="fraction of modes removed", ylabel="test accuracy", title="(a) removing modes, 1L1P p = 70")
    axes[0].legend(fontsize=7)
    for layer, color in zip(layers, colors):
        spectrum = results["b_spectrum"][layer]
        tau = np.asarray(spectrum["tau_by_rank"])
        rank = np.arange(1, len(tau) + 1)
        fit = spectrum["fit"]
        axes[1].loglog(rank, tau, "o", ms=3, color=color,
                       label=f"layer {int(layer) + 1}: break {fit['break_rank']}, exponents {fit['leading_exponent']:.2f} / {fit['tail_exponent']:.2f}")
    axes[1].set(xlabel="rank", ylabel="tau", title="(b) mode measure against rank")
    axes[1].legend(fontsize=7)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig3Settings(), QUICK, "fig3", argv=argv)


if __name__ == "__main__":
    main()
