"""Fig. 1 of the letter: a 2-3-1 MDL network on the Gaussian mixture of Eq. (2), and the
successive maps ``x -> xi_hat^T x -> Sigma xi_hat^T x -> xi Sigma xi_hat^T x -> relu``.

    python -m experiments.fig1 [--quick] [--out DIR]

One hidden layer of three units, p = 3, no biases, linear output, MSE on targets +-1 (the
authors' setting: batch 10, Adam lr 1e-3, weight decay 1e-4, 200 epochs, 5 networks,
1e5 training samples). Without biases three ReLU units cannot give Eq. (2)'s four XOR
quadrants alternating signs, so about 3/4 of the points is the best any such network does;
like the authors' script, panels (b, c) show the correctly classified test points.

--quick (2e4 samples, 20 epochs): about 30 seconds on 2 CPU cores.
Writes DIR/fig1.png, fig1.pdf, config.json, results.json.
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
from experiments.configs.fig1 import QUICK, Fig1Settings


def run(settings: Fig1Settings, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    s = settings
    data = mdl_jax.gaussian_mixture_dataset(jax.random.PRNGKey(2023), s.n_train, s.n_test)
    grid = common.train_grid(out, "mdl", data, (2, 3, 1), "mdl", modes=[3], seeds=range(s.seeds), lr=s.lr,
                             epochs=s.epochs, loss="mse", batch_size=s.batch_size)
    best = int(np.argmax(grid.test_accuracy[-1]))
    params = mdl_jax.select_run(grid.params, best)
    layer = mdl_jax.mode_layers(params, grid.spec)[0]
    x = jnp.asarray(data.test_images[: s.shown_points])
    t = 2 * data.test_labels[: s.shown_points] - 1
    output = np.asarray(mdl_jax.apply(params, x, spec=grid.spec))[:, 0]
    correct = np.sign(output) == t
    maps = {k: np.asarray(v) for k, v in analysis.geometric_maps(layer, x).items()}
    results = {
        "settings": dataclasses.asdict(s),
        "test_accuracy": grid.test_accuracy[-1], "test_mse": grid.test_loss[-1],
        "test_mse_by_epoch": common.spread(grid.test_loss, 1),
        "shown_network": best, "sigma": np.asarray(layer.sigma), "xi_hat": np.asarray(layer.xi_hat), "xi": np.asarray(layer.xi),
        "correct_fraction_shown": float(correct.mean()),
        "points": {"x": np.asarray(x), "t": t, "correct": correct, **maps},
        "wall_time_s": time.perf_counter() - start,
    }
    common.save(out, "fig1", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    points = {k: np.asarray(v) for k, v in results["points"].items()}
    keep = points["correct"].astype(bool)
    color = np.where(points["t"][keep] > 0, "tab:red", "tab:blue")
    fig = plt.figure(figsize=(15, 4.2), constrained_layout=True)
    ax = fig.add_subplot(1, 5, 1)
    loss = results["test_mse_by_epoch"]
    ax.plot(np.arange(1, len(loss["mean"]) + 1), loss["mean"])
    ax.set(xlabel="epoch", ylabel="test MSE", title="(a) 2-3-1, p = 3")
    ax = fig.add_subplot(1, 5, 2)
    ax.scatter(*points["x"][keep].T, c=color, s=5)
    ax.set(title="input x", aspect="equal")
    for i, (key, title) in enumerate((("projected", r"$\hat\xi^T x$"), ("scaled", r"$\Sigma\hat\xi^T x$"),
                                      ("hidden", r"(b) $h = $relu$(\xi\Sigma\hat\xi^T x)$"))):
        ax = fig.add_subplot(1, 5, 3 + i, projection="3d")
        ax.scatter(*points[key][keep].T, c=color, s=4)
        ax.set_title(title, fontsize=10)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig1Settings(), QUICK, "fig1", mnist=False, argv=argv)


if __name__ == "__main__":
    main()
