"""Weight-space effective model of binary networks (Zou & Huang 2021): is deep learning
"liquid-like"?

    python -m experiments.effective_model [--quick] [--out DIR] [--data-dir DIR]

Trains binary networks on PCA-20 MNIST by local reparametrisation (deep 20-15-15-10 with all
60,000 training images and with 500, shallow 20-10), samples weight configurations that pass
a test-accuracy threshold, fits a maximum-entropy Ising model per layer (LB, ITR, RB), to the
whole deep network (FULL) and to the shallow one by Boltzmann learning with BP moments, and
sweeps the entropy landscape s(d) around reference samples (field x from +3 to -3 and back,
warm-started BP). Writes DIR/effective_model.png/.pdf, config.json and results.json with
``max_entropy`` (LB, ITR, RB, FULL of the under-parametrised deep network), ``mean_abs_J``,
``mean_abs_h`` and ``shallow_max_distance_jump``.

--quick (128 networks per case, 10-200 epochs, 100 samples per network): a few minutes on
2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax import _binary as binary
from mdl_jax import landscape
from experiments import common

LAYERS = {"LB": slice(0, 300), "ITR": slice(300, 525), "RB": slice(525, 675)}


@dataclasses.dataclass(frozen=True)
class EffectiveModelSettings:
    networks: int = 32
    epochs_under: int = 100
    epochs_over: int = 1000
    epochs_shallow: int = 100
    lr: float = 0.3
    samples_per_network: int = 3000
    threshold_under: float = 0.80
    threshold_over: float = 0.70
    threshold_shallow: float = 0.72
    score_images: int = 10_000
    bm_iterations: int = 100
    references: int = 20
    field_step: float = 0.05


QUICK = EffectiveModelSettings(networks=128, epochs_under=10, epochs_over=200, epochs_shallow=10, samples_per_network=100,
                               threshold_under=0.74, threshold_over=0.62, threshold_shallow=0.68, score_images=2000,
                               references=3)


def _fit_and_sweep(samples: np.ndarray, settings) -> dict:
    spins = jnp.asarray(samples, jnp.float32)
    fit = landscape.boltzmann_learning(spins, iterations=settings.bm_iterations, damping=0.5)
    model = fit.model
    energy = -0.5 * jnp.einsum("si,ij,sj->s", spins, model.J, spins) - spins @ model.h
    order = np.argsort(np.asarray(energy))
    picks = order[np.linspace(0, len(order) - 1, settings.references).astype(int)]  # low to high energy
    fields = landscape.field_sweep(3.0, settings.field_step)
    sweeps = [landscape.entropy_landscape(model, spins[i], fields) for i in picks]
    n = spins.shape[1]
    off = ~np.eye(n, dtype=bool)
    return {
        "samples": len(samples), "rms_moment_error": float(fit.rms_error),
        "mean_abs_J": float(np.abs(np.asarray(model.J))[off].mean()), "mean_abs_h": float(np.abs(np.asarray(model.h)).mean()),
        "max_entropy": float(np.mean([np.max(np.asarray(s.entropy)) for s in sweeps])),
        "max_distance_jump": float(np.max([np.max(np.asarray(landscape.distance_jumps(s))) for s in sweeps])),
        "hysteresis": float(np.max([float(landscape.hysteresis(s)) for s in sweeps])),
        "bp_converged": float(np.mean([np.mean(np.asarray(s.converged)) for s in sweeps])),
        "curves": [{"x": s.fields, "d": s.distance, "s": s.entropy} for s in sweeps],
    }


def run(settings: EffectiveModelSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    s = settings
    pca = binary.pca_project(data)
    scoring = pca._replace(test_images=pca.test_images[: s.score_images], test_labels=pca.test_labels[: s.score_images])
    cases = {
        "under": ((20, 15, 15, 10), None, s.epochs_under, s.threshold_under),
        "over": ((20, 15, 15, 10), 500, s.epochs_over, s.threshold_over),
        "shallow": ((20, 10), None, s.epochs_shallow, s.threshold_shallow),
    }
    results: dict = {"settings": dataclasses.asdict(s), "cases": {}}
    for name, (widths, n_train, epochs, threshold) in cases.items():
        training = binary.train_binary(pca, widths, seeds=s.networks, epochs=epochs, lr=s.lr, n_train=n_train)
        samples, accuracy = binary.weight_samples(training, scoring, per_network=s.samples_per_network,
                                                  threshold=threshold, key=jax.random.PRNGKey(len(name)))
        if len(samples) < 50:
            raise SystemExit(f"only {len(samples)} {name} samples pass accuracy {threshold}: lower the threshold or train longer")
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / f"samples_{name}.npz", samples=samples, accuracy=accuracy)
        case = {"network_accuracy": training.test_accuracy[-1], "sample_accuracy_mean": float(accuracy.mean())}
        parts = {"FULL": slice(0, samples.shape[1])} if name == "shallow" else {**LAYERS, "FULL": slice(0, 675)}
        for part, columns in parts.items():
            case[part] = _fit_and_sweep(samples[:, columns], s)
        results["cases"][name] = case
    under = results["cases"]["under"]
    results["max_entropy"] = {part: under[part]["max_entropy"] for part in ("LB", "ITR", "RB", "FULL")}
    results["mean_abs_J"] = {part: under[part]["mean_abs_J"] for part in ("LB", "ITR", "RB")}
    results["mean_abs_h"] = {part: under[part]["mean_abs_h"] for part in ("LB", "ITR", "RB")}
    results["shallow_max_distance_jump"] = results["cases"]["shallow"]["FULL"]["max_distance_jump"]
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "effective_model", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    grid = np.linspace(1e-4, 0.5, 200)
    for ax, case in ((axes[0], "under"), (axes[1], "over")):
        for part, color in (("LB", "tab:blue"), ("ITR", "tab:green"), ("RB", "tab:red"), ("FULL", "k")):
            curve = results["cases"][case][part]["curves"][0]
            ax.plot(curve["d"], curve["s"], ".", ms=3, color=color, label=f"{part} (max {results['cases'][case][part]['max_entropy']:.3f})")
        ax.plot(grid, -grid * np.log(grid) - (1 - grid) * np.log(1 - grid), "--", color="gray", label="bound")
        ax.set(xlabel="distance d", ylabel="s(d)", title=f"deep 20-15-15-10, {case}-parametrised", xlim=(0, 0.55))
        ax.legend(fontsize=7)
    curve = results["cases"]["shallow"]["FULL"]["curves"][0]
    x, d = np.asarray(curve["x"]), np.asarray(curve["d"])
    half = (len(x) + 1) // 2
    axes[2].plot(x[:half], d[:half], "-", label="x down")
    axes[2].plot(x[half - 1:], d[half - 1:], "--", label="x up")
    axes[2].set(xlabel="field x", ylabel="distance d", title=f"shallow 20-10: largest jump {results['shallow_max_distance_jump']:.2f}")
    axes[2].legend(fontsize=8)
    return fig


def main(argv=None) -> dict:
    return common.main(__doc__, run, EffectiveModelSettings(), QUICK, "effective_model", argv=argv)


if __name__ == "__main__":
    main()
