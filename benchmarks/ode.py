"""Mean-field ODE of Fig. 4: our adaptive Diffrax solve against the authors' Euler scheme.

    python benchmarks/ode.py [--json]

Setting: d = 100, alpha = 1 (p = 4), m = k = 8, eta = 5, horizon t = 1e5.
* ``adaptive_solve_s``: the default solve (``online.solve_ode``: Rosenbrock23 + PID controller,
  rtol 3e-7, atol 3e-10), jitted, second call.
* ``numba_euler_s``: the authors' scheme, forward Euler with dt = 1/d (1e7 steps), explicit
  loops over every index tuple of the integrals, compiled with numba. Too slow to run whole
  here: a stretch of ``--numba-steps`` steps is timed and extrapolated linearly (reported).
* ``euler_max_abs_dev_vs_numba``: our Euler mode (Diffrax Euler, dt = 1/d) against the numba
  loops, max |difference| of Q and M over the timed stretch.
* ``max_abs_dev_adaptive_vs_fine_euler``: adaptive against Euler with dt = 1/(10 d), max
  |difference| of Q, M and eps_g at log-spaced times up to ``--fine-t``.
* ``solver_table`` (``--table``): every adaptive solver of ``online.ADAPTIVE_SOLVERS`` at
  rtol 1e-3 .. 1e-7 (atol = rtol / 1000) to the full horizon: wall time (second call), steps,
  and max |difference| of Q, M and eps_g at the 60 saved times against a reference solve
  (Dopri8, rtol 1e-10, atol 1e-13). Acceptance, fixed before the table was run: a setting
  gives "the same answer" if that difference is at most 1e-5, the distance between the
  default solve and Euler at dt = 1/(10 d).
* ``sim_samples_per_s``: online SGD samples per second, all runs together, of the full Fig. 4's
  program at d = 100 (alpha = 0.5, 1, 2, 4 x 5 teachers x 8 seeds = 160 runs learning from 8
  input streams, ``online.theory_vs_simulation``), the seeds spread over one CPU device per core;
  timed over t <= ``--sim-t``, in the figure's ``simulation_dtype`` (``sim_dtype``; float32
  unless ``--simulation-dtype float64``; teachers, students and the ODE stay float64).
* ``full_fig4_s``: the full Fig. 4 (``experiments/configs/fig4.py``), extrapolated from measured
  parts: each dimension's simulation at the rate measured over t <= ``--sim-t``, its test
  evaluations (``n_times`` on the fixed set of ``n_test`` samples) at their measured cost, and
  the ODE solves of each dimension to the full horizon, measured, and panel (c)'s ODE solves
  (``plateau_teachers`` per alpha), measured (``full_fig4_parts``).
numba is a benchmark-only dependency (``pip install numba``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numba
import numpy as np

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)  # as experiments.fig4: each core simulates its seeds
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.configs.fig4 import Fig4Settings  # noqa: E402
from experiments.fig4 import plateau_curves  # noqa: E402
from mdl_jax import online  # noqa: E402
from mdl_jax.online.simulate import _shard_seeds  # noqa: E402


@numba.njit(cache=False)
def _i3(c11, c12, c13, c23, c33):
    lam3 = (1 + c11) * (1 + c33) - c13 * c13
    return (2 / math.pi) * (c23 * (1 + c11) - c12 * c13) / ((1 + c11) * math.sqrt(lam3))


@numba.njit(cache=False)
def _i4(c11, c12, c13, c14, c22, c23, c24, c33, c34, c44):
    lam4 = (1 + c11) * (1 + c22) - c12 * c12
    lam0 = lam4 * c34 - c23 * c24 * (1 + c11) - c13 * c14 * (1 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    lam1 = lam4 * (1 + c33) - c23 * c23 * (1 + c11) - c13 * c13 * (1 + c22) + 2 * c12 * c13 * c23
    lam2 = lam4 * (1 + c44) - c24 * c24 * (1 + c11) - c14 * c14 * (1 + c22) + 2 * c12 * c14 * c24
    ratio = min(1.0, max(-1.0, lam0 / math.sqrt(lam1 * lam2)))
    return 4 / (math.pi**2 * math.sqrt(lam4)) * math.asin(ratio)


@numba.njit(cache=False)
def numba_euler(q, mm, p, a, eta, dt, n_steps):
    """Forward Euler of the (Q, M) equations with loops over all index tuples."""
    m, k = mm.shape
    n = m + k
    c = np.empty((n, n))
    v = np.empty(n)
    v[:m], v[m:] = 1.0 / m, -1.0 / k
    q, mm = q.copy(), mm.copy()
    for _ in range(n_steps):
        c[:m, :m], c[:m, m:], c[m:, :m], c[m:, m:] = q, mm, mm.T, p
        e_du = np.zeros((m, n))
        for i in range(m):
            for j in range(n):
                for f in range(n):
                    e_du[i, j] += v[f] * _i3(c[i, i], c[i, j], c[i, f], c[j, f], c[f, f]) / m
        e_dd = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                for f in range(n):
                    for e in range(n):
                        e_dd[i, j] += v[f] * v[e] * _i4(
                            c[i, i], c[i, j], c[i, f], c[i, e], c[j, j], c[j, f], c[j, e], c[f, f], c[f, e], c[e, e]
                        ) / m**2
        a_dl = a @ e_du[:, :m]
        dq = -eta * (a_dl + a_dl.T) + eta**2 * (a @ e_dd @ a)
        dm = -eta * (a @ e_du[:, m:])
        q, mm = q + dt * dq, mm + dt * dm
    return q, mm


def _timed(solve, *inputs):
    jax.block_until_ready(solve(*inputs))  # compile
    start = time.perf_counter()
    solution = jax.block_until_ready(solve(*inputs))
    return solution, time.perf_counter() - start


def _max_deviation(one, other) -> float:
    """Largest |difference| of Q, M and eps_g between two solutions saved at the same times."""
    return max(float(jnp.abs(x - y).max()) for x, y in ((one.Q, other.Q), (one.M, other.M), (one.eps_g, other.eps_g)))


def solver_table(op0, a, eta, ts, tolerances=(1e-3, 1e-4, 1e-5, 1e-6, 3e-7, 1e-7)) -> list[dict]:
    """Wall time, steps and deviation from a tight reference of every solver and tolerance."""
    reference = online.solve_ode(op0, a, eta, ts, solver="dopri8", rtol=1e-10, atol=1e-13, max_steps=10**6)
    rows = []
    for name in online.ADAPTIVE_SOLVERS:
        for rtol in tolerances:
            solve = jax.jit(lambda op0, a, name=name, rtol=rtol: online.solve_ode(op0, a, eta, ts, solver=name, rtol=rtol,
                                                                                   atol=rtol * 1e-3, max_steps=10**6))
            solution, seconds = _timed(solve, op0, a)
            deviation = _max_deviation(solution, reference)
            rows.append({"solver": name, "rtol": rtol, "atol": rtol * 1e-3, "seconds": seconds, "steps": int(solution.num_steps),
                         "max_abs_dev_vs_reference": deviation, "same_answer": deviation <= 1e-5})
            print(rows[-1], file=sys.stderr, flush=True)  # progress: stdout holds only the results
    return rows


def full_fig4(s: Fig4Settings, stretch_t: float) -> tuple[float, dict]:
    """(samples/s of the d = 100 program, the full Fig. 4's time per dimension and panel (c)'s ODE), from measured parts."""
    configs = [(d, s.panel_a_alpha) for d in s.panel_a_d] + [(s.panel_b_d, alpha) for alpha in s.panel_b_alpha]
    setups = online.teacher_student_groups(configs, hidden=s.hidden, teachers=s.teachers, seed=s.seed, dtype=jnp.dtype(s.dtype))
    keys = _shard_seeds(jax.random.split(jax.random.PRNGKey(1), s.seeds))
    ts, parts = online.log_times(s.t_max, s.n_times, t_min=s.t_min), {}
    for d in dict.fromkeys(d for d, _ in setups):
        exact = [setup[1:] for c, setup in setups.items() if c[0] == d]  # the ODE's, in s.dtype
        groups = jax.tree.map(lambda a: a.astype(s.simulation_dtype), exact)  # the simulation's
        runs = s.seeds * sum(t.xi_hat.shape[0] for t, _ in groups)

        def timed(saves, n_test):
            simulate = jax.jit(jax.vmap(lambda key: [o.eps_g for o in online.simulate_runs(
                key, groups, s.eta, saves, n_test=n_test, test_key=jax.random.PRNGKey(2))]))
            return _timed(simulate, keys)[1]

        stretch = jnp.asarray([0, round(stretch_t * d)], jnp.int32)
        rate = runs * int(stretch[-1]) / timed(stretch, 1000)
        test_s = timed(jnp.zeros(2, jnp.int32), s.n_test) / 2  # two evaluations on the fixed set (drawn once)
        ops = [jax.vmap(lambda t, st: online.order_parameters(st.weights(), t.weights()))(t, st) for t, st in exact]
        start = time.perf_counter()
        jax.block_until_ready(online.solve_each(jax.tree.map(lambda *a: jnp.concatenate(a), *ops),
                                                jnp.concatenate([jax.vmap(online.mode_coupling)(st) for _, st in exact]), s.eta, ts,
                                                solver=s.ode_solver))
        ode_s = time.perf_counter() - start  # compiled and run once, as the figure does
        sim_s = runs * round(s.t_max * d) / rate
        parts[d] = {"runs": runs, "samples_per_s": rate, "simulation_s": sim_s, "test_evaluation_s": test_s,
                    "ode_s": ode_s, "total_s": sim_s + s.n_times * test_s + ode_s}
        print(d, parts[d], file=sys.stderr, flush=True)  # progress: stdout holds only the results
    if s.plateau_teachers:  # panel (c): the ODE alone over many teachers per alpha, compiled and run once, as the figure does
        start = time.perf_counter()
        plateau_curves(s)
        parts["panel_c"] = {"ode_solves": s.plateau_teachers * len(s.panel_b_alpha), "total_s": time.perf_counter() - start}
        print("panel (c)", parts["panel_c"], file=sys.stderr, flush=True)
    return parts[s.panel_b_d]["samples_per_s"], parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numba-steps", type=int, default=2000, help="Euler steps timed for numba")
    parser.add_argument("--fine-t", type=float, default=100.0, help="horizon of the fine-Euler check")
    parser.add_argument("--sim-t", type=float, default=100.0, help="horizon t of the timed simulation stretches")
    parser.add_argument("--table", action="store_true", help="also time every solver and tolerance (minutes)")
    parser.add_argument("--simulation-dtype", choices=("float32", "float64"), help="of the SGD runs (default: the figure's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    d, alpha, hidden, eta, t_max = 100, 1.0, 8, 5.0, 1e5
    p = online.modes_for_load(alpha, d)
    teacher, student = online.init_teacher_student(jax.random.PRNGKey(0), d, p, hidden, dtype=jnp.float64)
    op0 = online.order_parameters(student.weights(), teacher.weights())
    a = online.mode_coupling(student)
    ts = online.log_times(t_max, 60)

    solution, adaptive_s = _timed(jax.jit(lambda op0, a: online.solve_ode(op0, a, eta, ts)), op0, a)

    args_np = [np.asarray(x) for x in (op0.Q, op0.M, op0.P, a)]
    numba_euler(*args_np, eta, 1.0 / d, 2)  # compile
    start = time.perf_counter()
    q_nb, m_nb = numba_euler(*args_np, eta, 1.0 / d, args.numba_steps)
    numba_stretch_s = time.perf_counter() - start
    total_steps = int(round(t_max * d))
    numba_s = numba_stretch_s * total_steps / args.numba_steps

    stretch = jnp.asarray([0.0, args.numba_steps / d])
    ours = online.solve_ode(op0, a, eta, stretch, method="euler", d=d, max_steps=args.numba_steps + 10)
    euler_dev = max(float(np.abs(np.asarray(ours.Q[-1]) - q_nb).max()), float(np.abs(np.asarray(ours.M[-1]) - m_nb).max()))

    fine_ts = online.log_times(args.fine_t, 30)
    coarse = online.solve_ode(op0, a, eta, fine_ts)
    fine = online.solve_ode(op0, a, eta, fine_ts, method="euler", d=10 * d, max_steps=int(args.fine_t * 10 * d) + 10)
    fine_dev = _max_deviation(coarse, fine)

    settings = dataclasses.replace(Fig4Settings(), **({"simulation_dtype": args.simulation_dtype} if args.simulation_dtype else {}))
    sim_rate, fig4_parts = full_fig4(settings, args.sim_t)

    results = {
        "setting": {"d": d, "alpha": alpha, "p": p, "m": hidden, "k": hidden, "eta": eta, "t_max": t_max},
        "adaptive_solve_s": adaptive_s,
        "adaptive_solver_steps": int(solution.num_steps),
        "numba_euler_s": numba_s,
        "numba_euler_extrapolated": True,
        "numba_euler_timed_steps": args.numba_steps,
        "numba_euler_total_steps": total_steps,
        "numba_euler_timed_s": numba_stretch_s,
        "speedup_vs_numba_euler": numba_s / adaptive_s,
        "euler_max_abs_dev_vs_numba": euler_dev,
        "max_abs_dev_adaptive_vs_fine_euler": fine_dev,
        "fine_euler_horizon_t": args.fine_t,
        "sim_dtype": settings.simulation_dtype,
        "sim_samples_per_s": sim_rate,
        "full_fig4_s": sum(part["total_s"] for part in fig4_parts.values()),
        "full_fig4_extrapolated": True,
        "full_fig4_parts": fig4_parts,
        "final_eps_g": float(solution.eps_g[-1]),
    }
    if args.table:
        results["solver_table"] = solver_table(op0, a, eta, ts)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
