"""Weight-space effective model of binary networks (Zou & Huang 2021): is deep learning "liquid-like"?

    python -m experiments.effective_model [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

Binary networks trained on PCA-20 MNIST as runs of DIR/runs/; weight samples above an accuracy
(DIR/samples_<case>.npz); an Ising model per layer and network, fitted and examined both ways
(:func:`mdl_jax.landscape.fit_and_examine`, :func:`~mdl_jax.landscape.shallow_verdicts`).
Cases, settings and wall times: experiments/configs/effective_model.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

import mdl_jax
from mdl_jax import binary, landscape
from experiments import common
from experiments.configs.effective_model import FITS, NOTES_MEAN_ABS, PARTS, QUICK, EffectiveModelSettings


def _samples(name: str, widths, n_train, epochs: int, threshold: float, pca, scoring, s: EffectiveModelSettings, out: Path) -> dict:
    """The case's weight samples above the accuracy threshold, and their accuracies (reused
    from an earlier run with the same training settings)."""
    def train_and_draw():
        data = pca._replace(train_images=pca.train_images[:n_train], train_labels=pca.train_labels[:n_train])
        grid = common.train_grid(out, f"binary_{name}", data, widths, "binary", seeds=range(s.networks), lr=s.lr, epochs=epochs,
                                 batch_size=min(200, len(data.train_images)), weight_decay=0.0, lr_halving_epochs=epochs)
        samples, accuracy = binary.weight_samples(grid.params["logits"], scoring, per_network=s.samples_per_network,
                                                  threshold=threshold, key=jax.random.PRNGKey(len(name)), min_kept=50)
        return {"samples": samples, "accuracy": accuracy, "network_accuracy": grid.test_accuracy[-1]}

    recipe = {"widths": widths, "n_train": n_train, "epochs": epochs, "threshold": threshold,
              **{k: getattr(s, k) for k in ("networks", "lr", "samples_per_network", "score_images")}}
    return common.cached(out / f"samples_{name}.npz", recipe, train_and_draw)


def run(settings: EffectiveModelSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s, methods = time.perf_counter(), settings, [m for m in (settings.fit, settings.compare) if m in FITS]
    pca = binary.pca_project(data)
    scoring = pca._replace(test_images=pca.test_images[: s.score_images], test_labels=pca.test_labels[: s.score_images])
    results: dict = {"settings": dataclasses.asdict(s), "cases": {}}
    for c, (name, (widths, n_train, epochs, threshold)) in enumerate(s.cases().items()):
        samples = (drawn := _samples(name, widths, n_train, epochs, threshold, pca, scoring, s, out))["samples"]
        if name != "shallow" and s.hidden_permutations:
            samples = binary.permute_hidden_units(samples, widths, jax.random.PRNGKey(100 + c), copies=s.hidden_permutations)
        shallow = name == "shallow"  # one part, every column
        results["cases"][name] = {
            "network_accuracy": drawn["network_accuracy"], "sample_accuracy_mean": float(drawn["accuracy"].mean()),
            "kept_samples": len(drawn["samples"]),
            **landscape.fit_parts(samples, {"FULL": PARTS["FULL"]} if shallow else PARTS, methods, 1000 * c,
                                  fit_options={m: s.fit_options(m) for m in methods}, comparison_curves=shallow,
                                  examine_options={m: s.examine_options(m, shallow) for m in methods},
                                  log=lambda line: print(f"{name} {line}", flush=True))}
    shallow = landscape.fits_by_method(results["cases"]["shallow"]["FULL"])
    deep = [landscape.fits_by_method(results["cases"][c][part]).get("mcmc", {}).get("metropolis_hysteresis") for c in ("under", "over") for part in PARTS]
    if "mcmc" in shallow:
        results.update(landscape.shallow_verdicts(shallow["mcmc"], [x for x in deep if x is not None], authors=shallow.get("bp")))
    for stat in ("max_entropy", "mean_abs_J", "mean_abs_h"):
        results[stat] = {part: results["cases"]["under"][part][stat] for part in PARTS if part != "FULL" or stat == "max_entropy"}
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "effective_model", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), constrained_layout=True)
    colors = {"LB": "tab:blue", "ITR": "tab:green", "RB": "tab:red", "FULL": "k"}
    d = np.linspace(1e-4, 0.5, 200)
    for ax, case in zip(axes, ("under", "over")):
        for part, color in colors.items():
            fit = results["cases"][case][part]
            ax.plot(fit["curves"][0]["d"], fit["curves"][0]["s"], ".", ms=3, color=color, label=f"{part} (max {fit['max_entropy']:.3f})")
        ax.plot(d, landscape.entropy_bound(d), "--", color="gray", label="bound")
        ax.set(xlabel="distance d", ylabel="s(d)", title=f"deep 20-15-15-10, {case}-parametrised ({fit['fit']} fit)", xlim=(0, 0.55))
    boxes = [(part, stat, results["cases"]["under"][part][f"abs_{stat}_quantiles"]) for part in ("LB", "ITR", "RB") for stat in "Jh"]
    axes[2].bxp([{"whislo": q[0], "q1": q[1], "med": q[2], "q3": q[3], "whishi": q[4], "label": f"{part} |{stat}|"} for part, stat, q in boxes],
                showfliers=False)  # under-parametrised: 5-25-50-75-95 % quantiles; the notes' means
    axes[2].plot(range(1, 7), [NOTES_MEAN_ABS[stat][part] for part, stat, _ in boxes], "*", color="gray", label="notes, mean")
    axes[2].set(yscale="log", ylabel="|J|, |h|", title="couplings and fields, under")
    shallow = results["cases"]["shallow"]["FULL"]  # the lowest-energy reference, by BP and by chains, for both fits
    for fit, color in zip((shallow, shallow.get("comparison")), ("tab:blue", "tab:orange")):
        for curves, (down, up), how in (("curves", ("-", "--"), "BP"), ("metropolis_curves", (".", "x"), "chains")):
            if fit and curves in fit:
                x, dist = np.asarray(fit[curves][0]["x"]), np.asarray(fit[curves][0]["d"])
                half = (len(x) + 1) // 2
                axes[3].plot(x[:half], dist[:half], down, color=color, ms=3, label=f"{fit['fit']} fit, {how}, x down")
                axes[3].plot(x[half - 1:], dist[half - 1:], up, color=color, ms=3, label=f"{fit['fit']} fit, {how}, x up")
    verdict = results.get("shallow_faithful", {}).get("verdict", "")
    axes[3].set(xlabel="field x", ylabel="distance d", title=f"shallow 20-10, lowest-energy reference\n{verdict}")
    for ax in axes:
        ax.legend(fontsize=6)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, EffectiveModelSettings(), QUICK, "effective_model", argv=argv)


if __name__ == "__main__":
    main()
