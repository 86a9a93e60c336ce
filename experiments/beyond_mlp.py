"""Mode decomposition beyond the MLP (the letter's closing question): a CNN and a vision
transformer on MNIST with every mode layer decomposed, against the same models with plain
layers; the tau spectrum and the weakest-first against random removal of a middle layer.

    python -m experiments.beyond_mlp [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

Settings, commands and wall times: experiments/configs/beyond_mlp.py. Writes DIR/beyond_mlp.png,
.pdf, config.json, results.json, and each trained grid as a workdir under DIR/runs/.
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
from experiments import common, models
from experiments.configs.beyond_mlp import QUICK, BeyondMLPSettings


def _family(s: BeyondMLPSettings, data, out: Path, family: str, widths, modes, layer: int, x, y) -> dict:
    train = lambda method, **kw: common.train_grid(out, method, data, widths, method, **s.recipe(), **kw)
    plain, moded = train(f"{family}_plain"), train(f"{family}_modes", modes=list(modes))
    summary = lambda acc, count: {"params": count, **common.spread(acc)}
    finals = common.by_modes(moded, moded.test_accuracy[-1])
    counts = {run["modes"][0]: run["param_count"] for run in moded.runs}
    largest = np.asarray([r for r, run in enumerate(moded.runs) if run["modes"][0] == max(modes)])  # unpadded: all active
    study = analysis.mode_study(jax.tree.map(lambda a: jnp.asarray(a[largest]), moded.params), moded.spec, x, y,
                                layer=layer, fractions=jnp.linspace(0.0, 1.0, s.fractions),
                                keys=jnp.stack([jax.random.PRNGKey(r) for r in range(len(largest))]), draws=s.random_draws)
    return {
        "plain": summary(plain.test_accuracy[-1], plain.runs[0]["param_count"]),
        "modes": {str(p): summary(acc, counts[p]) for p, acc in finals.items()},
        "analysis_modes": max(modes), "analysis_layer": layer, "tau_by_rank": study.spectrum["tau_by_rank"],
        "tau_fit": study.spectrum["fit"], "removal": study.removal,
        "wall_time_s": {"plain": float(plain.wall_time_s), "modes": float(moded.wall_time_s)},
    }


def run(settings: BeyondMLPSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s = time.perf_counter(), settings
    models.register()
    data = data._replace(train_images=data.train_images[: s.n_train], train_labels=data.train_labels[: s.n_train])
    x, y = jnp.asarray(data.test_images[: s.analysis_images]), jnp.asarray(data.test_labels[: s.analysis_images])
    results = {"settings": dataclasses.asdict(s), "fractions": np.linspace(0.0, 1.0, s.fractions)}
    families = {"cnn": (models.CNN_WIDTHS, s.cnn_modes, s.cnn_layer), "vit": (models.VIT_WIDTHS, s.vit_modes, s.vit_layer)}
    for family in s.families:
        results[family] = _family(s, data, out, family, *families[family], x, y)
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "beyond_mlp", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), constrained_layout=True)
    families = [(f, color) for f, color in (("cnn", "tab:blue"), ("vit", "tab:orange")) if f in results]
    names, fractions = {"cnn": "CNN (2 conv + dense)", "vit": "ViT (2 blocks, width 64)"}, np.asarray(results["fractions"])
    for ax, (family, color) in zip(axes, families):
        r = results[family]
        ps = sorted(r["modes"], key=int)
        common.errorbar(ax, [r["modes"][p]["params"] for p in ps], common.stacked(r["modes"][p] for p in ps), label="mode layers")
        for p in ps:
            ax.annotate(f"p={p}", (r["modes"][p]["params"], r["modes"][p]["mean"]), fontsize=7)
        common.errorbar(ax, [r["plain"]["params"]], common.stacked([r["plain"]]), marker="s", color="k", label="plain")
        ax.set(xscale="log")
        tau, name = np.asarray(r["tau_by_rank"]), family.upper()
        axes[2].loglog(np.arange(1, len(tau) + 1), tau, "o-", ms=3, color=color, label=f"{name} layer {r['analysis_layer']}, p = {r['analysis_modes']}")
        axes[3].plot(fractions, r["removal"]["weakest_first"]["mean"], "-", color=color, label=f"{name}, weakest tau first")
        axes[3].plot(fractions, r["removal"]["random"]["mean"], "--", color=color, label=f"{name}, random")
    common.label_axes(axes, [(names[f], "trainable parameters", "test accuracy") for f, _ in families])
    common.label_axes(axes[2:], [("mode spectrum of a middle layer", "rank", "tau (mean over seeds)"),
                                 ("removing modes", "fraction of the layer's modes removed", "test accuracy")])
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, BeyondMLPSettings(), QUICK, "beyond_mlp", argv=argv)


if __name__ == "__main__":
    main()
