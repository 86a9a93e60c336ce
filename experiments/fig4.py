"""Fig. 4 of the letter: online learning of a mode-decomposed committee machine, theory vs SGD.

    python -m experiments.fig4 [--quick] [--out DIR] [--set KEY=VALUE] [--resume]

(a) mode load alpha = 1, several input dimensions d; (b) d = 100, several alpha. Lines: the
mean-field ODE from the simulation's own initial order parameters; markers: online SGD, mean
and standard deviation over seeds; insets: the final student-teacher overlap M. Each d is
stored as it finishes (``OUT/d<d>.npz``, for ``--resume``). Settings, precision and wall
times: experiments/configs/fig4.py.
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


def compare_at(d: int, alphas: list[float], ts, s: Fig4Settings, out: Path) -> dict[float, online.TheoryVsSimulation]:
    """Every configuration at input dimension ``d`` (one simulation program), stored in
    ``out/d<d>.npz``: a killed figure run resumes from the dimensions it finished."""
    fields = online.TheoryVsSimulation._fields

    def compute():
        found = online.theory_vs_simulation(
            [(d, alpha) for alpha in alphas], ts, hidden=s.hidden, eta=s.eta, seeds=s.seeds, n_test=s.n_test,
            teachers=s.teachers, seed=s.seed, redraw_above=0.01 if s.redraw_student else None, fixed_test=s.fixed_test,
            common_inputs=s.common_inputs, solver=s.ode_solver, dtype=jnp.dtype(s.dtype), simulation_dtype=jnp.dtype(s.simulation_dtype))
        return {f"{alpha:g}_{f}": np.asarray(getattr(c, f)) for alpha, c in zip(alphas, found) for f in fields}

    arrays = common.cached(out / f"d{d}.npz", {**dataclasses.asdict(s), "d": d, "alphas": alphas}, compute)
    return {alpha: online.TheoryVsSimulation(int(arrays[f"{alpha:g}_p"]), *(arrays[f"{alpha:g}_{f}"] for f in fields[1:]))
            for alpha in alphas}


def plateau_curves(s: Fig4Settings) -> dict[str, np.ndarray]:
    """Panel (c)'s ODE alone: ``eps_g`` ``(s.plateau_teachers, s.plateau_n_times)`` per alpha of
    panel (b) (keyed ``f"{alpha:g}"``), its first teachers the simulated ones."""
    ts = online.log_times(s.t_max, s.plateau_n_times, t_min=s.t_min)
    eps = online.theory_only([(s.panel_b_d, a) for a in s.panel_b_alpha], ts, hidden=s.hidden, eta=s.eta, teachers=s.plateau_teachers,
                             seed=s.seed, redraw_above=0.01 if s.redraw_student else None, solver=s.ode_solver, dtype=jnp.dtype(s.dtype))
    return {f"{a:g}": e for a, e in zip(s.panel_b_alpha, eps)}


def plateaus_over_teachers(s: Fig4Settings, out: Path) -> dict:
    """Panel (b)'s plateau statistics over ``s.plateau_teachers`` teachers per alpha, from the
    ODE alone on a grid of ``s.plateau_n_times`` times (stored in ``out/plateau_ode.npz``)."""
    ts = online.log_times(s.t_max, s.plateau_n_times, t_min=s.t_min)

    def compute():
        print(f"fig4: plateaus over {s.plateau_teachers} teachers per alpha at d = {s.panel_b_d} (ODE) ...", flush=True)
        return plateau_curves(s)

    recipe = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("onset_fraction", "no_plateau_decades")}
    curves = common.cached(out / "plateau_ode.npz", recipe, compute)
    measure = dict(onset_fraction=s.onset_fraction, no_plateau_decades=s.no_plateau_decades)
    return {a: {**online.plateau_statistics(ts, curves[a], **measure), "ts": np.asarray(ts), "eps_median": np.median(curves[a], 0)}
            for a in curves}


def run(settings: Fig4Settings, out: Path, *, plot: bool = True) -> dict:
    """Computes both panels (in ``settings.dtype``, SGD in ``settings.simulation_dtype``) and writes the figure and results into ``out``."""
    start, s, configs = time.perf_counter(), settings, settings.configurations()
    with jax.enable_x64("float64" in (s.dtype, s.simulation_dtype)):
        ts = online.log_times(s.t_max, s.n_times, t_min=s.t_min)
        found, dims = {}, list(dict.fromkeys(c["d"] for c in configs))
        for i, d in enumerate(dims):
            alphas, begun = sorted({c["alpha"] for c in configs if c["d"] == d}), time.perf_counter()
            print(f"fig4: d = {d} ({i + 1}/{len(dims)}), alpha = {', '.join(f'{a:g}' for a in alphas)}, "
                  f"{s.teachers} teachers x {s.seeds} seeds ...", flush=True)
            found[d] = compare_at(d, alphas, ts, s, out)
            print(f"fig4: d = {d} done in {time.perf_counter() - begun:.0f} s", flush=True)
        plateau_ode = plateaus_over_teachers(s, out) if s.plateau_teachers else None
    ts = np.asarray(ts)
    results = {"settings": dataclasses.asdict(s), "ts": ts, "teachers_per_alpha": s.teachers,
               **online.summarise_sweep(ts, configs, [found[c["d"]][c["alpha"]] for c in configs])}
    shares = {f"{c['alpha']:g}": c["plateau_share"] for c in results["configurations"] if c["panel"] == "b"}
    results["plateau"] = {a: {"median": float(np.median(v)), "min": min(v), "max": max(v)} for a, v in shares.items()}
    if plateau_ode is not None:
        results["plateau_ode"] = plateau_ode
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "fig4", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    """Draws Fig. 4 from ``results.json``'s contents."""
    plt = common.pyplot()
    ts = np.asarray(results["ts"])
    many = results.get("plateau_ode")
    fig, axes = plt.subplots(1, 3 if many else 2, figsize=(16.5 if many else 11, 4.4), constrained_layout=True)
    for ax, panel, key, label in ((axes[0], "a", "d", "d"), (axes[1], "b", "alpha", r"\alpha")):
        configs = [c for c in results["configurations"] if c["panel"] == panel]
        for config, color in zip(configs, plt.cm.Blues(np.linspace(0.4, 1.0, len(configs)))):  # teacher 0 in full, others thin
            ode, sim, std = (np.asarray(config[k]) for k in ("eps_ode", "eps_sim_mean", "eps_sim_std"))
            ax.plot(ts[1:], ode[0, 1:], color=color, lw=1.8, label=f"${label} = {config[key]:g}$ (p = {config['p']})")
            ax.plot(ts[1:], ode[1:, 1:].T, color=color, lw=0.6, alpha=0.5)
            lower = np.minimum(std[0, 1:], 0.9 * sim[0, 1:])  # on a log axis a bar to mean - std <= 0 has no end: stop it a decade down
            ax.errorbar(ts[1:], sim[0, 1:], yerr=[lower, std[0, 1:]], fmt="o", ms=3.5, color=color, mfc="none", elinewidth=0.8, capsize=0)
        ax.set(xscale="log", yscale="log", xlabel=r"$t = \nu / d$", ylabel=r"$\epsilon_g$")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-10))  # below: a learned teacher at float64's floor
        fixed = rf"\alpha = {configs[0]['alpha']:g}" if panel == "a" else f"d = {configs[0]['d']}"
        ax.set_title(f"({panel}) ${fixed}$: lines ODE, markers SGD ({results['teachers_per_alpha']} teachers)\n"
                     "bars: seeds' std, cut a decade below the mean", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
        shown = configs[0] if panel == "a" else min(configs, key=lambda c: abs(c["alpha"] - 1.0))
        where = [0.76, 0.7, 0.2, 0.25] if panel == "a" else [0.4, 0.04, 0.26, 0.34]  # where the curves leave room
        inset = ax.inset_axes(where, xticks=[], yticks=[], title=f"|M|, {key} = {shown[key]:g}")
        inset.imshow(np.abs(np.asarray(shown["M_final"])), cmap="viridis")
        inset.title.set_fontsize(7)
    if many:
        _draw_plateaus(axes[2], many, results["teachers_per_alpha"], results["settings"])
    return fig


def _draw_plateaus(ax, many: dict, simulated: int, settings: dict) -> None:
    """Panel (c): each teacher's longest flat stretch after the onset of learning, per alpha
    (the simulated teachers filled), with the median and the no-plateau line."""
    rng = np.random.default_rng(0)
    for i, (alpha, p) in enumerate(many.items()):
        longest = np.asarray(p["longest_flat_decades"])
        x = i + rng.uniform(-0.15, 0.15, len(longest))
        ax.plot(x[simulated:], longest[simulated:], "o", mfc="none", color="C0", ms=4)
        ax.plot(x[:simulated], longest[:simulated], "o", color="C1", ms=4)
        ax.plot([i - 0.3, i + 0.3], [p["longest_flat_decades_median"]] * 2, color="k")
        ax.text(i, -0.25, f"none: {p['no_plateau_fraction']:.0%}", ha="center", fontsize=7)
    ax.axhline(settings["no_plateau_decades"], color="gray", ls=":", lw=0.8)
    ax.set_xticks(range(len(many)), [f"$\\alpha = {a}$" for a in many])
    ax.set(ylabel="longest flat stretch after the onset (decades of t)", ylim=(-0.4, None),
           title=f"(c) d = {settings['panel_b_d']}, ODE, {next(iter(many.values()))['teachers']} teachers per alpha\n"
                 f"filled: the {simulated} simulated; dotted: no-plateau bound", )
    ax.title.set_fontsize(10)


def main(argv=None) -> dict:
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)  # on a CPU, each core simulates its share of the seeds
    results = common.main(__doc__, run, Fig4Settings(), QUICK, "fig4", mnist=False, argv=argv)
    print(summary(results))
    return results


def summary(results: dict) -> str:
    """What a reader wants from ``results.json`` at a glance, as lines of text."""
    at = results["max_rel_gap_at"]
    lines = [f"theory vs simulation, |eps_sim - eps_ode| / eps_ode: median {results['median_rel_gap_theory_vs_simulation']:.1%}, "
             f"largest {results['max_rel_gap_theory_vs_simulation']:.0%} (d = {at['d']}, alpha = {at['alpha']:g}, "
             f"t = {at['t']:.3g}, eps_ode = {at['eps_ode']:.2g})",
             f"plateau share of the learning phase at d = {results['settings']['panel_b_d']}, over "
             f"{results['teachers_per_alpha']} teachers:"]
    lines += [f"  alpha = {alpha:>4}: median {p['median']:.2f} (min {p['min']:.2f}, max {p['max']:.2f})"
              for alpha, p in results["plateau"].items()]
    if "plateau_ode" in results:
        lines.append(f"over {next(iter(results['plateau_ode'].values()))['teachers']} teachers (ODE), from the onset of learning:")
        lines += [f"  alpha = {alpha:>4}: share median {p['share_median']:.2f} ({p['share_min']:.2f}-{p['share_max']:.2f}), longest flat "
                  f"stretch median {p['longest_flat_decades_median']:.2f} decades, no plateau in {p['no_plateau_fraction']:.0%} of teachers"
                  for alpha, p in results["plateau_ode"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
