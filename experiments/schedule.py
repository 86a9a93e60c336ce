"""A learning-rate schedule designed through the mean-field ODE at large mode load, against the
best constant rate, in theory and in simulation: does it shorten Fig. 4's plateaus?

    python -m experiments.schedule [--quick] [--out DIR] [--set KEY=VALUE] [--resume]

(a) the schedules; (b) eps_g(t), ODE lines and SGD markers (geometric means over teachers and
seeds; the ODE's below 1e-12, its rounding floor, drawn at it), the held-out teachers dashed; (c) each teacher's eps_g at the horizon, designed over
best constant, ODE against SGD; (d) each teacher's longest flat stretch after the onset of
learning under both. Settings, rules of the verdicts and wall times:
experiments/configs/schedule.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax import online
from experiments import common
from experiments.configs.schedule import QUICK, ScheduleSettings

# Below this the ODE's eps_g is rounding, at Fig. 4's solver tolerances (it can come out negative):
# logs and ratios of the ODE's errors are taken of max(eps_g, EPS_FLOOR).
EPS_FLOOR = 1e-12
SCHEDULES = ("letter", "constant", "designed")  # eta = settings.eta throughout; the best constant; the designed schedule
_OBJECTIVE_KEYS = ("d", "alpha", "hidden", "eta", "horizon", "bins", "t_first", "design_teachers", "solver", "rtol", "atol",
                   "max_steps", "seed", "redraw_student")  # what the design's objective and its gradient check depend on
_DESIGN_KEYS = _OBJECTIVE_KEYS + ("round_iterations", "learning_rate", "eta_min", "eta_max")


def teachers(s: ScheduleSettings):
    """Fig. 4's teachers and initial students at ``(d, alpha)``, their order parameters and couplings."""
    (p, teacher, student), = online.teacher_student_groups([(s.d, s.alpha)], hidden=s.hidden, teachers=s.teachers, seed=s.seed,
                                                           redraw_above=0.01 if s.redraw_student else None,
                                                           dtype=jnp.float64).values()
    ops = jax.vmap(lambda t, st: online.order_parameters(st.weights(), t.weights()))(teacher, student)
    return p, ops, jax.vmap(online.mode_coupling)(student)


def design_in_rounds(s: ScheduleSettings, ops, couplings, edges, out: Path) -> online.Design:
    """``online.design`` for the first ``design_teachers``, ``round_iterations`` Adam steps at a
    time, each round stored in ``out/design_round<r>.npz`` and continued from the last."""
    first = jax.tree.map(lambda a: a[:s.design_teachers], (ops, couplings))
    recipe, found = {k: getattr(s, k) for k in _DESIGN_KEYS}, None
    for r in range(math.ceil(s.iterations / s.round_iterations)):
        steps = min(s.round_iterations, s.iterations - r * s.round_iterations)

        def compute(start=found, steps=steps, r=r):
            print(f"schedule: design, iterations {r * s.round_iterations + 1}-{r * s.round_iterations + steps} "
                  f"of {s.iterations} ...", flush=True)
            begun = time.perf_counter()
            new = online.design(*first, edges, eta_init=s.eta, eta_min=s.eta_min, eta_max=s.eta_max, steps=steps,
                                learning_rate=s.learning_rate, solver=s.solver, rtol=s.rtol, atol=s.atol, max_steps=s.max_steps,
                                start=start)
            print(f"schedule: eps_g(T) designed {new.eps_designed:.3g}, best constant {new.eps_constant:.3g} "
                  f"(eta = {new.eta_constant:.3g}), {time.perf_counter() - begun:.0f} s", flush=True)
            return {k: np.asarray(v) for k, v in new._asdict().items()}

        arrays = common.cached(out / f"design_round{r}.npz", {**recipe, "round": r, "steps": steps}, compute)
        found = online.Design(arrays["edges"], arrays["eta"], float(arrays["eta_constant"]), float(arrays["eps_designed"]),
                              float(arrays["eps_constant"]), arrays["history"])
    return found


def gradient_at_start(s: ScheduleSettings, ops, couplings, edges) -> dict:
    print("schedule: the design's gradient at the start against finite differences ...", flush=True)
    first = jax.tree.map(lambda a: a[:s.design_teachers], (ops, couplings))
    found = online.gradient_check(*first, edges, np.full(s.bins, s.eta), solver=s.solver, rtol=s.rtol, atol=s.atol,
                                   max_steps=s.max_steps)
    print(f"schedule: d mean log eps_g(T) / d log eta: {found['ad']:.4g} (gradient), {found['fd']:.4g} (finite difference)",
          flush=True)
    return {k: np.asarray(v) for k, v in found.items()}


def save_times(s: ScheduleSettings, edges: np.ndarray, n: int) -> np.ndarray:
    """``n`` log-spaced times up to the horizon, from 0, with every bin edge among them."""
    grid = np.asarray(online.log_times(s.horizon, n, t_min=s.t_min))
    on_an_edge = np.isclose(grid[:, None], edges[None], rtol=1e-9, atol=0).any(1)
    return np.unique(np.concatenate([grid[~on_an_edge], edges]))  # the edges exactly, 0 among them


def run(settings: ScheduleSettings, out: Path, *, plot: bool = True) -> dict:
    start, s = time.perf_counter(), settings
    edges = online.schedule_edges(s.horizon, s.bins, t_first=s.t_first)
    with jax.enable_x64(True):
        p, ops, couplings = teachers(s)
        check = common.cached(out / "gradient_check.npz", {k: getattr(s, k) for k in _OBJECTIVE_KEYS},
                              lambda: gradient_at_start(s, ops, couplings, edges))
        found = design_in_rounds(s, ops, couplings, edges, out)
        rates = {"letter": np.full(s.bins, s.eta), "constant": np.full(s.bins, found.eta_constant), "designed": found.eta}
        saves, fine = save_times(s, edges, s.n_times), save_times(s, edges, s.plateau_n_times)
        common_args = dict(hidden=s.hidden, seed=s.seed, redraw_above=0.01 if s.redraw_student else None, dtype=jnp.float64,
                           eta_edges=edges)
        curves = {}
        for name in SCHEDULES:
            def compute(name=name):
                print(f"schedule: {name} (eta = {', '.join(f'{e:.3g}' for e in rates[name])}), ODE and {s.teachers} teachers x "
                      f"{s.seeds} seeds of SGD ...", flush=True)
                (c,) = online.theory_vs_simulation([(s.d, s.alpha)], jnp.asarray(saves), eta=jnp.asarray(rates[name]), seeds=s.seeds,
                                                   n_test=s.n_test, teachers=s.teachers, fixed_test=True,
                                                   simulation_dtype=jnp.dtype(s.simulation_dtype), **common_args)
                (ode_fine,) = online.theory_only([(s.d, s.alpha)], jnp.asarray(fine), eta=jnp.asarray(rates[name]),
                                                 teachers=s.teachers, **common_args)
                return {"eps_ode": c.eps_ode, "eps_sim": c.eps_sim, "eps_ode_fine": ode_fine}

            recipe = {**dataclasses.asdict(s), "rates": rates[name].tolist()}
            curves[name] = common.cached(out / f"curves_{name}.npz", recipe, compute)
    results = summarise(s, p, edges, found, rates, saves, fine, curves)
    check = {k: float(v) for k, v in check.items()}
    results["gradient_check"] = {**check, "agrees": abs(check["ad"] - check["fd"]) < s.gradient_tolerance * abs(check["fd"])}
    results["verdict"]["gradient_agrees"] = results["gradient_check"]["agrees"]
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "schedule", results, settings, draw(results) if plot else None)
    return results


def summarise(s: ScheduleSettings, p: int, edges, found: online.Design, rates: dict, saves, fine, curves: dict) -> dict:
    """The numbers of ``results.json``: per schedule and teacher the ODE's and SGD's eps_g at
    the horizon, plateau measures and the time to eps_0 / 100; the paired gain of the design
    over the best constant on the design and the held-out teachers; the verdicts."""
    held = {"design": slice(0, s.design_teachers), "held_out": slice(s.design_teachers, s.teachers)}
    per = {}
    for name, c in curves.items():
        found_plateaus = [online.plateaus(fine, e, onset_fraction=s.onset_fraction) for e in c["eps_ode_fine"]]
        per[name] = {
            "eta": rates[name], "eps_ode_T": c["eps_ode"][:, -1], "eps_sim_T_geomean": np.exp(np.log(c["eps_sim"][:, :, -1]).mean(1)),
            "eps_ode": c["eps_ode"], "eps_sim_geomean": np.exp(np.log(c["eps_sim"]).mean(1)),
            "longest_flat_decades": np.asarray([f.longest_decades for f in found_plateaus]),
            "plateau_share": np.asarray([f.share for f in found_plateaus]),
            "time_to_eps0_over_100": [online.time_to_fraction(fine, e) for e in c["eps_ode_fine"]],
        }
    # paired over seeds (the same inputs): log eps_sim(T), designed over constant, averaged over a set's teachers
    log_ratio = np.log(curves["designed"]["eps_sim"][:, :, -1]) - np.log(curves["constant"]["eps_sim"][:, :, -1])  # (teachers, seeds)
    gain = {}
    for label, rows in held.items():
        if rows.start == rows.stop:
            continue
        per_seed = log_ratio[rows].mean(0)
        mean, stderr = float(per_seed.mean()), float(per_seed.std(ddof=1) / math.sqrt(len(per_seed)))
        floored = {name: np.maximum(per[name]["eps_ode_T"][rows], EPS_FLOOR) for name in ("designed", "constant")}
        ode = float(np.mean(np.log(floored["designed"]) - np.log(floored["constant"])))
        gain[label] = {"teachers": rows.stop - rows.start, "sim_log_ratio": mean, "sim_log_ratio_stderr": stderr,
                       "sim_ratio": math.exp(mean), "ode_ratio": math.exp(ode),
                       "beats_constant": bool(mean < -s.gain_stderrs * stderr)}
    longest = {name: float(np.median(per[name]["longest_flat_decades"])) for name in SCHEDULES}
    learned = {name: sum(t is not None for t in per[name]["time_to_eps0_over_100"]) for name in SCHEDULES}
    verdict = {f"beats_constant_{label}": g["beats_constant"] for label, g in gain.items()}
    verdict["shortens_plateaus"] = bool(longest["designed"] <= longest["constant"] - s.shorter_decades)
    return {"settings": dataclasses.asdict(s), "p": p, "edges": edges, "ts": saves, "ts_fine": fine, "design_history": found.history,
            "design_eps_T": {"designed": found.eps_designed, "constant": found.eps_constant}, "schedules": per, "gain": gain,
            "median_longest_flat_decades": longest, "learned_by_horizon": learned,
            "verdict": verdict}


def draw(results: dict):
    """Draws the four panels from ``results.json``'s contents."""
    plt = common.pyplot()
    s, per = results["settings"], results["schedules"]
    ts, edges, design = np.asarray(results["ts"]), np.asarray(results["edges"]), slice(0, s["design_teachers"])
    held = slice(s["design_teachers"], s["teachers"])
    colors = {"letter": "0.5", "constant": "C0", "designed": "C3"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), constrained_layout=True)
    ax = axes[0]
    for name in SCHEDULES:
        eta = np.asarray(per[name]["eta"])
        ax.stairs(eta, np.concatenate([[s["t_min"]], edges[1:]]), baseline=None, color=colors[name], lw=2, label=name)
    ax.set(xscale="log", yscale="log", xlabel=r"$t$", ylabel=r"$\eta(t)$",
           title=f"(a) schedules (design for {s['design_teachers']} teachers, {s['iterations']} Adam steps)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for name in SCHEDULES:
        ode, sim = np.maximum(np.asarray(per[name]["eps_ode"]), EPS_FLOOR), np.asarray(per[name]["eps_sim_geomean"])
        for rows, ls in ((design, "-"), (held, "--")):
            if rows.start < rows.stop:
                ax.plot(ts[1:], np.exp(np.log(ode[rows, 1:]).mean(0)), color=colors[name], ls=ls, lw=1.5)
                ax.plot(ts[1:], np.exp(np.log(sim[rows, 1:]).mean(0)), "o", ms=3, mfc="none", color=colors[name])
        ax.plot([], [], color=colors[name], label=name)
    ax.set(xscale="log", yscale="log", xlabel=r"$t$", ylabel=r"$\epsilon_g$ (geometric mean)",
           title=f"(b) d = {s['d']}, m = k = {s['hidden']}, p = {results['p']}: lines ODE, markers SGD ({s['seeds']} seeds)\n"
                 "solid: design teachers, dashed: held out")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[2]
    x = np.arange(s["teachers"])
    ode = np.log10(np.maximum(per["designed"]["eps_ode_T"], EPS_FLOOR) / np.maximum(per["constant"]["eps_ode_T"], EPS_FLOOR))
    sim = np.log10(np.asarray(per["designed"]["eps_sim_T_geomean"]) / np.asarray(per["constant"]["eps_sim_T_geomean"]))
    ax.bar(x - 0.2, ode, 0.4, color="C3", alpha=0.5, label="ODE")
    ax.bar(x + 0.2, sim, 0.4, color="C3", label="SGD (geometric mean over seeds)")
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(s["design_teachers"] - 0.5, color="gray", ls=":")
    ax.set(xticks=x, xlabel="teacher (left of the dotted line: designed for)", ylabel=r"$\log_{10}$ designed / best constant",
           title=rf"(c) $\epsilon_g$ at $t = {s['horizon']:g}$")
    ax.legend(fontsize=8)
    ax = axes[3]
    for name in SCHEDULES:
        ax.plot(x, per[name]["longest_flat_decades"], "o-", color=colors[name], label=name)
    ax.set(xticks=x, xlabel="teacher", ylabel="longest flat stretch after the onset (decades of t)",
           title="(d) plateaus in the ODE")
    ax.legend(fontsize=8)
    for a in axes:
        a.title.set_fontsize(9)
    return fig


def main(argv=None) -> dict:
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)  # as Fig. 4: each core simulates its share of the seeds
    results = common.main(__doc__, run, ScheduleSettings(), QUICK, "schedule", mnist=False, argv=argv)
    print(summary(results))
    return results


def summary(results: dict) -> str:
    """What a reader wants from ``results.json`` at a glance, as lines of text."""
    per, s = results["schedules"], results["settings"]
    lines = [f"rates per bin (edges {', '.join(f'{e:g}' for e in results['edges'])}):"]
    lines += [f"  {name:>8}: {', '.join(f'{e:.3g}' for e in per[name]['eta'])}" for name in SCHEDULES]
    for label, g in results["gain"].items():
        lines.append(f"{label} teachers ({g['teachers']}): eps_g(T) designed / best constant: ODE {g['ode_ratio']:.3f}, "
                     f"SGD {g['sim_ratio']:.3f} (log ratio {g['sim_log_ratio']:+.3f} +- {g['sim_log_ratio_stderr']:.3f})")
    lines.append("median longest flat stretch (ODE): " + ", ".join(
        f"{name} {v:.2f}" for name, v in results["median_longest_flat_decades"].items()) + f" decades (horizon {s['horizon']:g})")
    lines.append("teachers at eps_0 / 100 by the horizon (ODE): " + ", ".join(f"{name} {n}" for name, n in results["learned_by_horizon"].items())
                 + f" of {s['teachers']}")
    check = results["gradient_check"]
    lines.append(f"design gradient at the start, d mean log eps_g(T) / d log eta: {check['ad']:.4g}, finite difference "
                 f"{check['fd']:.4g} ({'agrees' if check['agrees'] else 'DOES NOT AGREE'})")
    lines.append("verdict: " + ", ".join(f"{k} = {v}" for k, v in results["verdict"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
