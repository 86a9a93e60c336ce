"""Theory against simulation: teachers per ``(d, alpha)``, the ODE beside online SGD, and the
summaries of Fig. 4 (gaps, plateau shares, times to a fraction of the initial error)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax.online.committee import Committee, init_teacher_student, mode_coupling, modes_for_load, order_parameters
from mdl_jax.online.design import rates_per_save
from mdl_jax.online.ode import solve_each
from mdl_jax.online.simulate import _shard_seeds, simulate_runs


class TheoryVsSimulation(NamedTuple):
    """One configuration ``(d, alpha)`` of the letter's Fig. 4, over teachers (host arrays)."""

    p: int  # modes, floor(alpha ln d)
    eps_ode: np.ndarray  # (teachers, T) mean-field prediction
    eps_sim: np.ndarray  # (teachers, seeds, T) online SGD
    M_final: np.ndarray  # (teachers, m, k) student-teacher overlap at the end (ODE)
    ode_steps: np.ndarray  # (teachers,) adaptive solver steps


def teacher_student_groups(
    configurations: list[tuple[int, float]], *, hidden: int, teachers: int, seed: int = 0,
    redraw_above: float | None = None, dtype=None,
) -> dict[tuple[int, float], tuple[int, Committee, Committee]]:
    """``(p, teachers, students)`` of each distinct ``(d, alpha)``, stacked over ``teachers``:
    teacher ``j`` and its initial student come from ``fold_in(fold_in(PRNGKey(seed), d), j)``
    with nested draws, so at one ``d`` every mode load shares its first modes."""
    stack = lambda items: jax.tree.map(lambda *leaves: jnp.stack(leaves), *items)
    setups = {}
    for d, alpha in dict.fromkeys((int(d), float(alpha)) for d, alpha in configurations):
        p = modes_for_load(alpha, d)
        pairs = [init_teacher_student(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), d), j), d, p, hidden,
                                      dtype=dtype, nested=True, redraw_above=redraw_above) for j in range(teachers)]
        setups[d, alpha] = (p, stack([t for t, _ in pairs]), stack([s for _, s in pairs]))
    return setups


def theory_vs_simulation(
    configurations: list[tuple[int, float]], ts: jax.Array, *, hidden: int, eta: float, seeds: int, n_test: int,
    teachers: int = 1, seed: int = 0, redraw_above: float | None = None, fixed_test: bool = False,
    common_inputs: bool = True, solver: str = "rosenbrock23", dtype=None, simulation_dtype=None, eta_edges=None,
) -> list[TheoryVsSimulation]:
    """The mean-field ODE against online SGD for each ``(d, alpha)`` of ``configurations``.

    Teachers and initial students come from :func:`teacher_student_groups`. The ODE starts from the
    simulation's own initial order parameters, integrated by ``solver`` (:func:`solve_each`).
    The simulations at one ``d`` are one program
    (:func:`simulate_runs`), measured at ``nu = round(t d)``:

    * ``common_inputs`` (default): seed ``s`` is one input stream,
      ``split(fold_in(PRNGKey(seed + 1), d), seeds)[s]``, that every teacher and mode load at
      ``d`` learns from (common random numbers: runs of one seed differ only by their
      teacher and modes); ``fixed_test`` measures all of them on one set drawn from
      ``fold_in(fold_in(PRNGKey(seed + 1), d), seeds)``, as the authors use one set.
    * otherwise every teacher has its own streams, ``split(fold_in(base, j), seeds)``, and
      with ``fixed_test`` its own test set, drawn from ``fold_in(fold_in(base, j), seeds)``
      (``base = fold_in(PRNGKey(seed + 1), d)``).

    A configuration listed twice (one point of both panels) is computed once. Teachers,
    students and the ODE are in ``dtype``; the SGD runs (inputs, patterns, ``eps_g``) in
    ``simulation_dtype`` (default: ``dtype``), from the same teachers and initial students.

    ``eta`` is one rate, or with ``eta_edges`` a piecewise-constant schedule
    (:func:`~mdl_jax.online.solve_ode`): the ODE steps onto its edges, and the simulation takes
    it per save (:func:`~mdl_jax.online.rates_per_save`: every edge must be one of ``ts``).
    """
    setups = teacher_student_groups(configurations, hidden=hidden, teachers=teachers, seed=seed, redraw_above=redraw_above,
                                    dtype=dtype)
    unique = list(setups)
    theory = _theory(setups, eta, ts, solver, eta_edges)
    rate = eta if eta_edges is None else jnp.asarray(rates_per_save(eta_edges, eta, ts))
    eps_sim = {}
    for d in dict.fromkeys(d for d, _ in unique):
        at_d = [c for c in unique if c[0] == d]
        groups = jax.tree.map(lambda a: a.astype(simulation_dtype or a.dtype), [setups[c][1:] for c in at_d])
        base = jax.random.fold_in(jax.random.PRNGKey(seed + 1), d)
        steps = jnp.round(ts * d).astype(jnp.int32)
        options = dict(rate=jnp.asarray(rate), steps=steps, n_test=n_test, fixed_test=fixed_test)
        if common_inputs:
            out = _per_seed(_shard_seeds(jax.random.split(base, seeds)), groups, jax.random.fold_in(base, seeds), **options)
            eps = [np.swapaxes(np.asarray(e, np.float64), 0, 1) for e in out]  # (teachers, seeds, T)
        else:
            keys = jnp.stack([jax.random.split(jax.random.fold_in(base, j), seeds) for j in range(teachers)])
            test_keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, j), seeds) for j in range(teachers)])
            eps = [np.asarray(e, np.float64)[:, :, 0] for e in _per_teacher(_shard_seeds(keys, 1), groups, test_keys, **options)]
        eps_sim.update(zip(at_d, eps))
    out = {}
    for index, c in enumerate(setups):
        rows = slice(index * teachers, (index + 1) * teachers)
        out[c] = TheoryVsSimulation(setups[c][0], np.asarray(theory.eps_g[rows]), eps_sim[c], np.asarray(theory.M[rows, -1]),
                                    np.asarray(theory.num_steps[rows]))
    return [out[int(d), float(alpha)] for d, alpha in configurations]


def _simulate(key, groups, test_key, rate, steps, n_test: int, fixed_test: bool) -> list[jax.Array]:
    return [o.eps_g for o in simulate_runs(key, groups, rate, steps, n_test=n_test, test_key=test_key if fixed_test else None)]


@functools.partial(jax.jit, static_argnames=("n_test", "fixed_test"))  # compiled once per shape: several schedules reuse it
def _per_seed(keys, groups, test_key, rate, steps, n_test: int, fixed_test: bool) -> list[jax.Array]:
    return jax.vmap(lambda key: _simulate(key, groups, test_key, rate, steps, n_test, fixed_test))(keys)


@functools.partial(jax.jit, static_argnames=("n_test", "fixed_test"))
def _per_teacher(keys, groups, test_keys, rate, steps, n_test: int, fixed_test: bool) -> list[jax.Array]:
    def teacher(keys, group, test_key):
        alone = jax.tree.map(lambda a: a[None], group)
        return jax.vmap(lambda key: _simulate(key, alone, test_key, rate, steps, n_test, fixed_test))(keys)

    return jax.vmap(teacher)(keys, groups, test_keys)


def _theory(setups: dict, eta, ts: jax.Array, solver: str, eta_edges=None):
    """The ODE from each teacher's initial student, every group of ``setups`` in turn (rows
    ``teachers * i`` to ``teachers * (i + 1)`` are group ``i``'s)."""
    ops = [jax.vmap(lambda t, s: order_parameters(s.weights(), t.weights()))(t, s) for _, t, s in setups.values()]
    couplings = [jax.vmap(mode_coupling)(s) for _, _, s in setups.values()]
    return solve_each(jax.tree.map(lambda *a: jnp.concatenate(a), *ops), jnp.concatenate(couplings), eta, ts, eta_edges=eta_edges,
                      solver=solver)


def theory_only(
    configurations: list[tuple[int, float]], ts: jax.Array, *, hidden: int, eta: float, teachers: int, seed: int = 0,
    redraw_above: float | None = None, solver: str = "rosenbrock23", dtype=None, eta_edges=None,
) -> list[np.ndarray]:
    """The ODE's ``eps_g`` ``(teachers, T)`` for each ``(d, alpha)``, without simulation: the
    teachers and initial students of :func:`theory_vs_simulation` with the same arguments (its
    first teachers are these first teachers), for statistics over many teachers; ``eta`` and
    ``eta_edges`` as there."""
    setups = teacher_student_groups(configurations, hidden=hidden, teachers=teachers, seed=seed, redraw_above=redraw_above,
                                    dtype=dtype)
    eps = np.asarray(_theory(setups, eta, ts, solver, eta_edges).eps_g)
    rows = {c: eps[i * teachers:(i + 1) * teachers] for i, c in enumerate(setups)}
    return [rows[int(d), float(alpha)] for d, alpha in configurations]


def summarise(ts: jax.Array, compared: TheoryVsSimulation) -> dict:
    """What Fig. 4 reports about one configuration (host numbers, for results.json).

    The curves (ODE per teacher; simulation mean and standard deviation over seeds), the
    relative gap ``|eps_sim - eps_ode| / eps_ode`` (largest, where, median), the gap in units
    of the seed-to-seed standard error of the mean (median over teachers and times ``t > 0``;
    at ``t = 0`` every seed has the same student), and per teacher the ODE's
    :func:`plateau_share` and :func:`time_to_fraction` of ``eps_0 / 100``.
    """
    ts, c = np.asarray(ts), compared
    sim = c.eps_sim.mean(1)  # (teachers, T)
    gap = np.abs(sim - c.eps_ode) / c.eps_ode
    stderr = c.eps_sim.std(1, ddof=1) / np.sqrt(c.eps_sim.shape[1])
    worst = np.unravel_index(gap.argmax(), gap.shape)
    return {
        "p": c.p, "eps_ode": c.eps_ode, "eps_sim_mean": sim, "eps_sim_std": c.eps_sim.std(1),
        "max_rel_gap": float(gap.max()), "median_rel_gap": float(np.median(gap)), "max_gap_at_t": float(ts[worst[1]]),
        "eps_ode_at_max_gap": float(c.eps_ode[worst]), "M_final": c.M_final[0], "ode_steps": c.ode_steps,
        "gap_vs_seed_stderr": float(np.median((np.abs(sim - c.eps_ode) / np.maximum(stderr, 1e-30))[:, ts > 0])),
        "plateau_share": [plateau_share(ts, e) for e in c.eps_ode],
        "time_to_eps0_over_100": [time_to_fraction(ts, e) for e in c.eps_ode],
    }


def summarise_sweep(ts: jax.Array, configurations: list[dict], compared: list[TheoryVsSimulation]) -> dict:
    """What Fig. 4 reports about a set of configurations (dicts with ``d``, ``alpha`` and any
    labels), each compared in ``compared``: each one's :func:`summarise` with its labels
    (``configurations``), the gaps in seed standard errors keyed ``d=<d>,alpha=<alpha>``, and
    the largest relative gap (and where) and the median one over all of them."""
    rows = [{**config, **summarise(ts, c)} for config, c in zip(configurations, compared, strict=True)]
    worst = max(rows, key=lambda c: c["max_rel_gap"])
    return {
        "configurations": rows,
        "gap_vs_seed_stderr": {f"d={c['d']},alpha={c['alpha']:g}": c["gap_vs_seed_stderr"] for c in rows},
        "max_rel_gap_theory_vs_simulation": worst["max_rel_gap"],
        "max_rel_gap_at": {"t": worst["max_gap_at_t"], "eps_ode": worst["eps_ode_at_max_gap"], "d": worst["d"], "alpha": worst["alpha"]},
        "median_rel_gap_theory_vs_simulation": float(np.median([c["median_rel_gap"] for c in rows])),
    }


class Plateaus(NamedTuple):
    """The flat stretches of one learning curve after learning has begun (:func:`plateaus`)."""

    onset: float  # the first time eps <= onset_fraction * eps_0 (the first saved time > 0 if never)
    share: float  # share of log-time from the onset in which eps is flat
    longest_decades: float  # the longest unbroken flat stretch from the onset, in decades of t


def plateaus(ts: jax.Array, eps: jax.Array, *, onset_fraction: float = 0.9, slope: float = 0.2, floor: float = 1e-6) -> Plateaus:
    """Where a learning curve is flat, on a log-spaced grid ``ts`` (over ``ts > 0``).

    An interval of the grid is flat when ``|d ln eps / d ln t| < slope`` on it. Counted from
    the onset of learning, the first time ``eps <= onset_fraction * eps[0]`` (before it, every
    curve is flat because nothing has happened yet, which would inflate a curve that starts
    late), up to the first time ``eps`` falls below ``floor * eps[0]`` (a learned teacher's
    error then sits at the solver's or the test set's floor, flat or not by rounding alone).
    """
    ts, eps = np.asarray(ts), np.asarray(eps)
    keep = ts > 0
    log_t, log_eps = np.log(ts[keep]), np.log(np.maximum(eps[keep], 1e-300))
    started = np.nonzero(eps[keep] <= onset_fraction * float(eps[0]))[0]
    first = max(int(started[0]) - 1, 0) if started.size else 0  # the interval in which learning began
    below = np.nonzero(eps[keep] < floor * float(eps[0]))[0]
    last = len(log_t) - 1 if not below.size else max(int(below[0]), first + 1)  # intervals [first, last) end at or before the floor
    widths = np.diff(log_t)[first:last]
    flat = np.abs(np.diff(log_eps)[first:last] / widths) < slope
    longest = run = 0.0
    for width, is_flat in zip(widths, flat):
        run = run + width if is_flat else 0.0
        longest = max(longest, run)
    onset = float(ts[keep][started[0]] if started.size else ts[keep][0])
    return Plateaus(onset, float(np.sum(widths * flat) / np.sum(widths)), float(longest / np.log(10)))


def plateau_share(ts: jax.Array, eps: jax.Array, **kwargs) -> float:
    """:attr:`Plateaus.share` of :func:`plateaus`: the share of log-time from the onset of
    learning in which the error is flat."""
    return plateaus(ts, eps, **kwargs).share


def plateau_statistics(ts: jax.Array, eps: np.ndarray, *, no_plateau_decades: float = 0.5, **kwargs) -> dict:
    """Over teachers (``eps``: ``(teachers, T)``): the :func:`plateaus` share (median, min,
    max), the median longest flat stretch in decades, and ``no_plateau_fraction``, the share of
    teachers with no flat stretch longer than ``no_plateau_decades``: the chance that one
    teacher, as in the letter, shows no plateau."""
    found = [plateaus(ts, e, **kwargs) for e in np.asarray(eps)]
    shares, longest = np.asarray([f.share for f in found]), np.asarray([f.longest_decades for f in found])
    return {"teachers": len(found), "share_median": float(np.median(shares)), "share_min": float(shares.min()),
            "share_max": float(shares.max()), "longest_flat_decades_median": float(np.median(longest)),
            "no_plateau_fraction": float(np.mean(longest <= no_plateau_decades)), "shares": shares, "longest_flat_decades": longest}


def time_to_fraction(ts: jax.Array, eps: jax.Array, *, fraction: float = 0.01) -> float | None:
    """First saved time at which ``eps <= fraction * eps[0]``; ``None`` if never."""
    below = np.nonzero(np.asarray(eps) <= fraction * float(np.asarray(eps)[0]))[0]
    return float(np.asarray(ts)[below[0]]) if below.size else None
