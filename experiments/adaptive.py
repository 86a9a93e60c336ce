"""Adaptive modes against the grid: does one pruning run find Fig. 2c's least p?

    python -m experiments.adaptive [--quick] [--out DIR] [--data-dir DIR] [--resume]

For each width N (784-N-N-10): the authors' BP, 1L2P at every p of Fig. 2c's grid (its least
p by Fig. 2c's criterion), and one adaptive sweep that starts at p_max modes and prunes by tau
during training (``mdl_jax`` pruning, one program over seeds x thresholds). (a) the grid's
least p and each threshold's final modes against N; (b) accuracy against trainable
parameters, grid and adaptive. Settings, criterion and expected numbers:
experiments/configs/adaptive.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import mdl_jax
from mdl_jax import analysis
from experiments import common
from experiments.configs.adaptive import QUICK, AdaptiveSettings


def _final_modes(out: Path, grid: str) -> list[dict]:
    return json.loads((out / "runs" / grid / "summary.json").read_text())["runs"]


def at_width(s: AdaptiveSettings, data, out: Path, n: int) -> dict:
    """The baseline, the grid and the adaptive sweep at width ``n``, compared."""
    widths, mdl = (784, n, n, 10), s.recipe(weight_decay=s.weight_decay_1l2p)
    base = common.train_grid(out, f"{n}_{s.baseline}", data, widths, s.baseline, **s.recipe(weight_decay=s.weight_decay))
    grid = common.train_grid(out, f"{n}_grid", data, widths, "mdl", modes=[p for p in s.grid_modes if p <= n], **mdl)
    adaptive = common.train_grid(out, f"{n}_adaptive", data, widths, "mdl", modes=[s.p_max], prune_every=s.prune_every,
                                 prune_tau=list(s.prune_taus), prune_until=s.prune_until, min_modes=s.min_modes, **mdl)
    reference = base.final(s.last_epochs)
    threshold = reference.mean() - reference.std(ddof=1)
    by_p = common.by_modes(grid, grid.final(s.last_epochs))
    runs, final = _final_modes(out, f"{n}_adaptive"), adaptive.final(s.last_epochs)
    pruned = {}
    for tau in s.prune_taus:
        members = [i for i, r in enumerate(runs) if r["prune_tau"] == tau]
        modes = np.asarray([runs[i]["final_modes"] for i in members])
        pruned[f"{tau:g}"] = {
            "final_modes_mean": modes.mean(0), "final_modes_min": modes.min(0), "final_modes_max": modes.max(0),
            "final_param_count_mean": float(np.mean([runs[i]["final_param_count"] for i in members])),
            **common.spread(final[members]), "passes": bool(final[members].mean() >= threshold)}
    return {
        "baseline": {**common.spread(reference), "threshold": threshold, "params": base.runs[0]["param_count"]},
        "grid": {str(p): {**common.spread(a), "params": mdl_jax.param_count(mdl_jax.make_spec(widths, p, "mdl"))}
                 for p, a in by_p.items()},
        "least_modes": analysis.least_modes(list(by_p), np.stack(list(by_p.values())), reference),
        "adaptive": pruned,
        "wall_time_s": {"grid": grid.wall_time_s, "adaptive": adaptive.wall_time_s, "baseline": base.wall_time_s},
    }


def run(settings: AdaptiveSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start = time.perf_counter()
    results = {"settings": dataclasses.asdict(settings),
               "widths": {str(n): at_width(settings, data, out, n) for n in settings.widths}}
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "adaptive", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    """(a) least p and final modes against N; (b) accuracy against trainable parameters."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    widths = sorted(results["widths"], key=int)
    n = np.asarray([int(w) for w in widths])
    least = [results["widths"][w]["least_modes"] for w in widths]
    axes[0].plot(n, [np.nan if p is None else p for p in least], "ks", ms=7, label="grid: least p (Fig. 2c criterion)")
    for tau in results["settings"]["prune_taus"]:
        key = f"{tau:g}"
        mean = [np.mean(results["widths"][w]["adaptive"][key]["final_modes_mean"]) for w in widths]
        first = [results["widths"][w]["adaptive"][key]["final_modes_mean"][0] for w in widths]
        line = axes[0].plot(n, mean, "o-", label=f"adaptive tau {key}: mean over layers")[0]
        axes[0].plot(n, first, "^--", color=line.get_color(), alpha=0.6, label=f"adaptive tau {key}: layer 0")
        points = [results["widths"][w]["adaptive"][key] for w in widths]
        axes[1].errorbar([p["final_param_count_mean"] for p in points], [100 * p["mean"] for p in points],
                         yerr=[100 * p["std"] for p in points], fmt="o", color=line.get_color(), label=f"adaptive tau {key}")
    for w in widths:
        grid = results["widths"][w]["grid"]
        axes[1].plot([g["params"] for g in grid.values()], [100 * g["mean"] for g in grid.values()], "k.-", alpha=0.4, lw=0.8)
        base = results["widths"][w]["baseline"]
        axes[1].axhline(100 * base["threshold"], color="grey", ls=":", lw=0.8)
    axes[0].set(xscale="log", xlabel="width N", ylabel="modes", title="(a) least p (grid) and modes left by pruning")
    axes[0].set_xticks(n, [str(v) for v in n], minor=False)
    axes[0].set_xticks([], minor=True)
    axes[1].set(xscale="log", xlabel="trainable parameters", ylabel="test accuracy (%)", ylim=(90, 99),
                title="(b) accuracy: grid (grey, one line per N), adaptive\n(dotted: each N's criterion, BP mean - std)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return fig


def main(argv=None) -> dict:
    results = common.main(__doc__, run, AdaptiveSettings(), QUICK, "adaptive", argv=argv)
    for w, r in results["widths"].items():
        adaptive = ", ".join(f"tau {t}: {np.round(a['final_modes_mean'], 1).tolist()} ({100 * a['mean']:.2f} %)"
                             for t, a in r["adaptive"].items())
        print(f"N = {w}: grid least p {r['least_modes']}; adaptive {adaptive}; "
              f"wall grid {r['wall_time_s']['grid']:.0f} s, adaptive {r['wall_time_s']['adaptive']:.0f} s")
    return results


if __name__ == "__main__":
    main()
