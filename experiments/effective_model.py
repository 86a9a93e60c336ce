"""Weight-space effective model of binary networks (Zou & Huang 2021): is deep learning
"liquid-like"?

    python -m experiments.effective_model [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE]

Trains binary networks on PCA-20 MNIST (the ``binary`` method: deep 20-15-15-10 on all 60,000
images and on 500, shallow 20-10) as runs of DIR/runs/, keeps the weight configurations that
pass a test-accuracy threshold (DIR/samples_<case>.npz, reused by a later run with the same
training settings), pools the deep ones over relabellings of their hidden units, fits an Ising
model to each layer (LB, ITR, RB), to the whole deep network (FULL) and to the shallow one
(Metropolis-moment fit, and the notes' BP-moment fit for comparison), and examines each fit
(:func:`mdl_jax.landscape.examine`: moments, couplings, the entropy landscape by BP and by
Metropolis chains). Settings, wall times, expected numbers: experiments/configs/effective_model.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax import binary
from mdl_jax import landscape
from experiments import common
from experiments.configs.effective_model import QUICK, EffectiveModelSettings

LAYERS = {"LB": slice(0, 300), "ITR": slice(300, 525), "RB": slice(525, 675)}
FITS = ("bp", "mcmc")
NOTES_MEAN_ABS = {"J": {"LB": 0.0095, "ITR": 0.0040, "RB": 0.016}, "h": {"LB": 0.047, "ITR": 0.007, "RB": 0.089}}  # notes, section 4


def _log(message: str) -> None:
    print(message, flush=True)


def _fit(spins: jax.Array, method: str, settings: EffectiveModelSettings, key: jax.Array) -> landscape.BoltzmannFit:
    if method == "bp":
        return landscape.boltzmann_learning(spins, iterations=settings.bm_iterations, damping=0.5, start=settings.bp_start)
    return landscape.boltzmann_learning_mcmc(spins, key, iterations=settings.mcmc_iterations, chains=settings.mcmc_chains)


def _fit_and_sweep(spins: jax.Array, data: tuple, method: str, settings: EffectiveModelSettings, key: jax.Array,
                   references: int) -> dict:
    """Fits the Ising model to ``spins`` and examines it (:func:`landscape.examine`)."""
    k_fit, k_examine = jax.random.split(key)
    fit = _fit(spins, method, settings, k_fit)
    s = settings
    return {"fit": method, "rms_moment_error": float(fit.rms_error), **landscape.examine(
        fit.model, spins, data, k_examine, references=references, field_step=s.field_step, verify_chains=s.verify_chains,
        verify_sweeps=s.verify_sweeps, check_references=s.check_references, check_chains=s.check_chains,
        check_sweeps=s.check_sweeps)}


def _samples(name: str, widths, n_train, epochs: int, threshold: float, pca, scoring, s: EffectiveModelSettings, out: Path):
    """Trains the case's networks and samples their weights, or reuses the samples that an
    earlier run with the same training settings left in ``out``."""
    path = out / f"samples_{name}.npz"
    recipe = json.dumps({"widths": widths, "n_train": n_train, "epochs": epochs, "threshold": threshold, "networks": s.networks,
                         "lr": s.lr, "samples_per_network": s.samples_per_network, "score_images": s.score_images})
    if path.exists():
        with np.load(path) as stored:
            if "recipe" in stored and str(stored["recipe"]) == recipe:
                _log(f"{name}: reusing {len(stored['samples'])} samples from {path}")
                return stored["samples"], stored["accuracy"], stored["network_accuracy"]
    start = time.perf_counter()
    data = pca._replace(train_images=pca.train_images[:n_train], train_labels=pca.train_labels[:n_train])
    grid = common.train_grid(out, f"binary_{name}", data, widths, "binary", seeds=range(s.networks), lr=s.lr, epochs=epochs,
                             batch_size=min(200, len(data.train_images)), weight_decay=0.0, lr_halving_epochs=epochs)
    samples, accuracy = binary.weight_samples(grid.params["logits"], scoring, per_network=s.samples_per_network,
                                              threshold=threshold, key=jax.random.PRNGKey(len(name)))
    network_accuracy = grid.test_accuracy[-1]
    if len(samples) < 50:
        raise SystemExit(f"only {len(samples)} {name} samples pass accuracy {threshold}: lower the threshold or train longer")
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, samples=samples, accuracy=accuracy, network_accuracy=network_accuracy, recipe=recipe)
    _log(f"{name}: {s.networks} networks trained and {len(samples)} samples kept in {time.perf_counter() - start:.0f} s")
    return samples, accuracy, network_accuracy


def run(settings: EffectiveModelSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    s = settings
    if s.fit not in FITS:
        raise SystemExit(f"fit={s.fit!r} is not a fit; choose one of {', '.join(FITS)}")
    if s.compare not in (*FITS, "none") or s.compare == s.fit:
        raise SystemExit(f"compare={s.compare!r}: choose the fit other than fit={s.fit!r}, or none")
    if s.bp_start not in landscape.BP_STARTS:  # checked before the training, which the fits come after
        raise SystemExit(f"bp_start={s.bp_start!r}: choose zero (J = h = 0) or independent (fields atanh(m))")
    pca = binary.pca_project(data)
    scoring = pca._replace(test_images=pca.test_images[: s.score_images], test_labels=pca.test_labels[: s.score_images])
    cases = {
        "under": ((20, 15, 15, 10), None, s.epochs_under, s.threshold_under),
        "over": ((20, 15, 15, 10), 500, s.epochs_over, s.threshold_over),
        "shallow": ((20, 10), None, s.epochs_shallow, s.threshold_shallow),
    }
    results: dict = {"settings": dataclasses.asdict(s), "cases": {}}
    for c, (name, (widths, n_train, epochs, threshold)) in enumerate(cases.items()):
        samples, accuracy, network_accuracy = _samples(name, widths, n_train, epochs, threshold, pca, scoring, s, out)
        case = {"network_accuracy": network_accuracy, "sample_accuracy_mean": float(accuracy.mean()), "kept_samples": len(samples)}
        if len(widths) > 2 and s.hidden_permutations:
            samples = binary.permute_hidden_units(samples, widths, jax.random.PRNGKey(100 + c), copies=s.hidden_permutations)
        parts = {"FULL": slice(0, samples.shape[1])} if name == "shallow" else {**LAYERS, "FULL": slice(0, 675)}
        for p, (part, columns) in enumerate(parts.items()):
            tic = time.perf_counter()
            key = jax.random.PRNGKey(1000 * c + p)
            spins = jnp.asarray(samples[:, columns], jnp.float32)
            data = landscape.connected_moments(spins)  # once for both fits
            case[part] = _fit_and_sweep(spins, data, s.fit, s, key, s.references)
            if s.compare != "none":  # the other fit on the same references (curves kept for the shallow figure only)
                other = _fit_and_sweep(spins, data, s.compare, s, key, s.references)
                if name != "shallow":
                    other = {k: v for k, v in other.items() if k not in ("curves", "metropolis_curves")}
                case[part]["comparison"] = other
            fit = case[part]
            check = (f" (Metropolis chains: jump {fit['metropolis_max_distance_jump']:.3f}, loop {fit['metropolis_hysteresis']:.3f})"
                     if "metropolis_hysteresis" in fit else "")
            _log(f"{name} {part}: fits and landscapes in {time.perf_counter() - tic:.0f} s, max s {fit['max_entropy']:.3f}, "
                 f"largest jump of d {fit['max_distance_jump']:.3f}, loop {fit['hysteresis']:.3f}{check}")
        results["cases"][name] = case
    under = results["cases"]["under"]
    results["max_entropy"] = {part: under[part]["max_entropy"] for part in ("LB", "ITR", "RB", "FULL")}
    results["mean_abs_J"] = {part: under[part]["mean_abs_J"] for part in ("LB", "ITR", "RB")}
    results["mean_abs_h"] = {part: under[part]["mean_abs_h"] for part in ("LB", "ITR", "RB")}
    shallow = results["cases"]["shallow"]["FULL"]
    results["shallow_max_distance_jump"] = shallow["max_distance_jump"]
    summary = ("max_distance_jump", "hysteresis", "metropolis_max_distance_jump", "metropolis_hysteresis",
               "metropolis_correlation_error", "independent_correlation_error")
    results["shallow_landscape"] = {fit["fit"]: {k: fit[k] for k in summary if k in fit}
                                    for fit in (shallow, shallow.get("comparison")) if fit is not None}
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "effective_model", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), constrained_layout=True)
    grid = np.linspace(1e-4, 0.5, 200)
    colors = {"LB": "tab:blue", "ITR": "tab:green", "RB": "tab:red", "FULL": "k"}
    for ax, case in ((axes[0], "under"), (axes[1], "over")):
        for part, color in colors.items():
            curve = results["cases"][case][part]["curves"][0]
            ax.plot(curve["d"], curve["s"], ".", ms=3, color=color, label=f"{part} (max {results['cases'][case][part]['max_entropy']:.3f})")
        ax.plot(grid, -grid * np.log(grid) - (1 - grid) * np.log(1 - grid), "--", color="gray", label="bound")
        ax.set(xlabel="distance d", ylabel="s(d)", title=f"deep 20-15-15-10, {case}-parametrised", xlim=(0, 0.55))
        ax.legend(fontsize=7)
    ax = axes[2]  # |J| and |h| per layer (under-parametrised): 5-25-50-75-95% quantiles, notes' means as stars
    for k, (stat, marker) in enumerate((("J", "o"), ("h", "s"))):
        for j, part in enumerate(("LB", "ITR", "RB")):
            q = np.asarray(results["cases"]["under"][part][f"abs_{stat}_quantiles"])
            x = j + 0.2 * (2 * k - 1)
            ax.plot([x, x], [q[0], q[4]], "-", color=colors[part], lw=1)
            ax.plot([x, x], [q[1], q[3]], "-", color=colors[part], lw=5, alpha=0.5)
            ax.plot(x, q[2], marker, color=colors[part], label=f"|{stat}|" if j == 0 else None, mfc="white")
            ax.plot(x, NOTES_MEAN_ABS[stat][part], "*", color="gray", label="notes, mean" if j == k == 0 else None)
    ax.set(yscale="log", xticks=range(3), xticklabels=["LB", "ITR", "RB"], ylabel="|coupling| (o), |field| (s)",
           title="couplings and fields, under-parametrised")
    ax.legend(fontsize=7)
    shallow = results["cases"]["shallow"]["FULL"]  # the lowest-energy reference, solved by BP and simulated
    for fit, color in ((shallow, "tab:blue"), (shallow.get("comparison"), "tab:orange")):
        if fit is None:
            continue
        label = {"mcmc": "Metropolis-moment fit", "bp": "BP-moment fit"}[fit["fit"]]
        for curves, (down, up), how in (("curves", ("-", "--"), "BP"), ("metropolis_curves", (".", "x"), "chains")):
            if curves not in fit:
                continue
            x, d = np.asarray(fit[curves][0]["x"]), np.asarray(fit[curves][0]["d"])
            half = (len(x) + 1) // 2
            axes[3].plot(x[:half], d[:half], down, color=color, ms=3, label=f"{label}, {how}, x down")
            axes[3].plot(x[half - 1:], d[half - 1:], up, color=color, ms=3, label=f"{how}, x up")
    axes[3].set(xlabel="field x", ylabel="distance d",
                title=f"shallow 20-10: largest jump {results['shallow_max_distance_jump']:.2f} ({shallow['fit']} fit, BP)")
    axes[3].legend(fontsize=6)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, EffectiveModelSettings(), QUICK, "effective_model", argv=argv)


if __name__ == "__main__":
    main()
