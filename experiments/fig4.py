"""Fig. 4 of the letter: online learning of a mode-decomposed committee machine, theory vs SGD.

    python -m experiments.fig4 [--quick] [--out DIR] [--set KEY=VALUE] [--resume]

(a) mode load alpha = 1, several input dimensions d; (b) d = 100, several alpha. Lines: the
mean-field ODE (the config's ``ode_solver``) from the simulation's own initial order
parameters; markers: online SGD (eta = 5, m = k = 8), mean and standard deviation over seeds;
insets: the final student-teacher overlap M (it tends to the teacher's P as the student
learns). results.json holds every curve, the final M and the theory-simulation gaps; each d is
stored as it finishes (``OUT/d<d>.npz``, for ``--resume``). Precision is the config's
``dtype`` (float64 by default), in force for this run only. Settings and wall times:
experiments/configs/fig4.py.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax import online
from experiments import common
from experiments.configs.fig4 import QUICK, Fig4Settings


def configurations(settings: Fig4Settings) -> list[dict]:
    a = [{"panel": "a", "d": d, "alpha": settings.panel_a_alpha} for d in settings.panel_a_d]
    b = [{"panel": "b", "d": settings.panel_b_d, "alpha": alpha} for alpha in settings.panel_b_alpha]
    return a + b


def compare_at(d: int, alphas: list[float], ts, s: Fig4Settings, out: Path) -> dict[float, online.TheoryVsSimulation]:
    """Every configuration at input dimension ``d`` (one simulation program), stored in
    ``out/d<d>.npz``: a killed figure run resumes from the dimensions it finished."""
    fields = online.TheoryVsSimulation._fields

    def compute():
        found = online.theory_vs_simulation(
            [(d, alpha) for alpha in alphas], ts, hidden=s.hidden, eta=s.eta, seeds=s.seeds, n_test=s.n_test,
            teachers=s.teachers, seed=s.seed, redraw_above=0.01 if s.redraw_student else None, fixed_test=s.fixed_test,
            common_inputs=s.common_inputs, solver=s.ode_solver, dtype=jnp.dtype(s.dtype))
        return {f"{alpha:g}_{f}": np.asarray(getattr(c, f)) for alpha, c in zip(alphas, found) for f in fields}

    arrays = common.cached(out / f"d{d}.npz", {**dataclasses.asdict(s), "d": d, "alphas": alphas}, compute)
    return {alpha: online.TheoryVsSimulation(int(arrays[f"{alpha:g}_p"]), *(arrays[f"{alpha:g}_{f}"] for f in fields[1:]))
            for alpha in alphas}


def run(settings: Fig4Settings, out: Path, *, plot: bool = True) -> dict:
    """Computes both panels (in ``settings.dtype``) and writes the figure and results into ``out``."""
    start, s = time.perf_counter(), settings
    configs = configurations(s)
    by_d = {d: sorted({c["alpha"] for c in configs if c["d"] == d}) for d in dict.fromkeys(c["d"] for c in configs)}
    with jax.enable_x64(s.dtype == "float64"):
        ts = online.log_times(s.t_max, s.n_times, t_min=s.t_min)
        found = {d: compare_at(d, alphas, ts, s, out) for d, alphas in by_d.items()}
        compared, ts = [found[c["d"]][c["alpha"]] for c in configs], np.asarray(ts)
    rows = [{**config, **online.summarise(ts, c)} for config, c in zip(configs, compared)]
    worst = max(rows, key=lambda c: c["max_rel_gap"])
    results = {"settings": dataclasses.asdict(s), "ts": ts, "teachers_per_alpha": s.teachers, "configurations": rows,
               "gap_vs_seed_stderr": {f"d={c['d']},alpha={c['alpha']:g}": c["gap_vs_seed_stderr"] for c in rows},
               "plateau": {f"{c['alpha']:g}": {"median": float(np.median(c["plateau_share"])), "min": min(c["plateau_share"]),
                                                "max": max(c["plateau_share"])} for c in rows if c["panel"] == "b"},
               "max_rel_gap_theory_vs_simulation": worst["max_rel_gap"],
               "max_rel_gap_at": {"t": worst["max_gap_at_t"], "eps_ode": worst["eps_ode_at_max_gap"], "d": worst["d"], "alpha": worst["alpha"]},
               "median_rel_gap_theory_vs_simulation": float(np.median([c["median_rel_gap"] for c in rows]))}
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "fig4", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    """Draws Fig. 4 from ``results.json``'s contents."""
    plt = common.pyplot()
    ts = np.asarray(results["ts"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    for ax, panel, key, label in ((axes[0], "a", "d", "d"), (axes[1], "b", "alpha", r"\alpha")):
        configs = [c for c in results["configurations"] if c["panel"] == panel]
        colors = plt.cm.Blues(np.linspace(0.4, 1.0, len(configs)))
        for config, color in zip(configs, colors):  # teacher 0 in full, the other teachers' ODEs thin
            ode, sim, std = (np.asarray(config[k]) for k in ("eps_ode", "eps_sim_mean", "eps_sim_std"))
            ax.plot(ts[1:], ode[0, 1:], color=color, lw=1.8, label=f"${label} = {config[key]:g}$ (p = {config['p']})")
            ax.plot(ts[1:], ode[1:, 1:].T, color=color, lw=0.6, alpha=0.5)
            ax.errorbar(ts[1:], sim[0, 1:], yerr=std[0, 1:], fmt="o", ms=3.5, color=color, mfc="none", elinewidth=0.8, capsize=0)
        ax.set(xscale="log", yscale="log", xlabel=r"$t = \nu / d$", ylabel=r"$\epsilon_g$")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-10))  # below: a learned teacher at float64's floor
        fixed = r"\alpha" if panel == "a" else "d"
        value = configs[0]["alpha"] if panel == "a" else configs[0]["d"]
        ax.set_title(f"({panel}) ${fixed} = {value:g}$: lines ODE, markers SGD ({results['teachers_per_alpha']} teachers)", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
        inset_config = configs[0] if panel == "a" else min(configs, key=lambda c: abs(c["alpha"] - 1.0))
        inset = ax.inset_axes([0.4, 0.04, 0.26, 0.34])
        inset.imshow(np.abs(np.asarray(inset_config["M_final"])), cmap="viridis")
        inset.set_xticks([]), inset.set_yticks([])
        inset.set_title(f"|M|, {key} = {inset_config[key]:g}", fontsize=7)
    return fig


def main(argv=None) -> dict:
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)  # on a CPU, each core simulates its share of the seeds
    results = common.main(__doc__, run, Fig4Settings(), QUICK, "fig4", mnist=False, argv=argv)
    at = results["max_rel_gap_at"]
    print(f"|eps_sim - eps_ode| / eps_ode: median {results['median_rel_gap_theory_vs_simulation']:.1%}, largest "
          f"{results['max_rel_gap_theory_vs_simulation']:.0%} at t = {at['t']:.3g}, d = {at['d']}, alpha = {at['alpha']:g}")
    return results


if __name__ == "__main__":
    main()
