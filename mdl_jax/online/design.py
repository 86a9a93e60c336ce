"""Designing a learning-rate schedule through the mean-field ODE.

The schedule is piecewise constant on bins of time, ``eta(t) = eta_b`` for ``t`` in
``[edges[b], edges[b + 1])`` (log-spaced bins after a first one from 0, so that it can change
where the letter's plateaus sit). Its log-values are optimised by Adam with gradients through
``diffeqsolve`` (reverse mode, checkpointed) to minimise ``log eps_g`` at the horizon
``T = edges[-1]``; the best *constant* rate is found the same way, from the same start, so the
two are compared on equal terms. Rates stay within ``[eta_min, eta_max]`` (clipped in log
space). A designed schedule runs unchanged in simulation: :func:`~mdl_jax.online.simulate_runs`
takes one rate per save, so saving at the bin edges applies ``eta_b`` to exactly the samples of
bin ``b``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdl_jax.online.committee import OrderParameters
from mdl_jax.online.ode import solve_ode


class Design(NamedTuple):
    """A designed schedule and the best constant rate, both as the ODE predicts them.

    Attributes:
      edges: ``(B + 1,)`` bin edges in ``t``, from 0 to the horizon.
      eta: ``(B,)`` the designed rate in each bin.
      eta_constant: the best constant rate.
      eps_designed: the ODE's ``eps_g`` at the horizon under the schedule.
      eps_constant: the same under the best constant rate.
      history: ``log eps_g(T)`` at every iteration, schedule and constant: ``(steps, 2)``.
    """

    edges: np.ndarray
    eta: np.ndarray
    eta_constant: float
    eps_designed: float
    eps_constant: float
    history: np.ndarray


def schedule_edges(horizon: float, bins: int, *, t_first: float = 1.0) -> np.ndarray:
    """``0``, then ``bins`` log-spaced edges from ``t_first`` to ``horizon`` (``bins`` bins)."""
    if not 0 < t_first < horizon or bins < 1:
        raise ValueError(f"need 0 < t_first < horizon and bins >= 1, got t_first={t_first}, horizon={horizon}, bins={bins}")
    return np.concatenate([[0.0], np.logspace(math.log10(t_first), math.log10(horizon), bins)])


def design(
    op0: OrderParameters, A: jax.Array, edges, *, eta_init: float, eta_min: float = 1e-2, eta_max: float = 50.0,
    steps: int = 150, learning_rate: float = 0.05, solver: str = "tsit5", rtol: float = 1e-6, atol: float = 1e-9,
    max_steps: int = 4096, start: Design | None = None,
) -> Design:
    """Optimises a piecewise-constant schedule and the best constant rate for ``eps_g`` at
    ``edges[-1]``, starting both at ``eta_init`` (module docstring). Each is returned at the
    lowest objective seen (Adam on a rough objective may end above it).

    The gradient is that of the discrete solve, and it is only as good as the tolerances: at
    m = k = 8, p = 18, horizon t = 1e4, where a learned teacher's eps_g decays to 1e-9, Tsit5 at
    rtol 1e-8 gives d log eps / d log eta = -2.46 against -7.9 by finite differences (the wrong
    sign for the mean over two teachers), at rtol 1e-10 -7.95 against -7.97. Check it once
    with :func:`gradient_check` at the settings of a study.

    Args:
      op0, A: the initial order parameters and ``xi diag(sigma)^2 xi^T`` of one setup (or of
        several, stacked on a leading axis: the objective is then the mean ``log eps_g(T)``,
        a schedule designed for many teachers at once).
      edges: ``(B + 1,)`` bin edges, increasing from 0 (:func:`schedule_edges`).
      eta_init: the starting rate of both.
      eta_min, eta_max: the range the rates stay in.
      steps, learning_rate: Adam's iterations and step on the log-rates.
      solver, rtol, atol, max_steps: the ODE solver of every evaluation (reverse mode
        checkpoints over ``max_steps``: a budget near the steps taken keeps gradients cheap).
      start: a :class:`Design` of the same ``edges`` to continue from: its schedule and
        constant are the starting points (Adam's moments start afresh) and its ``history``
        comes first in the result's. A long design can so run in rounds of ``steps``
        iterations, each stored: one stopped resumes with the numbers it would have had.
    """
    edges = jnp.asarray(edges, op0.Q.dtype)
    if edges.ndim != 1 or edges.shape[0] < 2 or float(edges[0]) != 0.0 or not bool(jnp.all(jnp.diff(edges) > 0)):
        raise ValueError("edges must increase from 0, at least two of them")
    if not eta_min <= eta_init <= eta_max:
        raise ValueError(f"eta_init = {eta_init} must lie in [eta_min, eta_max] = [{eta_min}, {eta_max}]")
    if start is not None and not np.array_equal(np.asarray(start.edges), np.asarray(edges)):
        raise ValueError("start is a design for other edges: continue a design with the edges it was made for")
    bins, low, high = edges.shape[0] - 1, math.log(eta_min), math.log(eta_max)
    fn, bounds = _objective(solver, rtol, atol, max_steps, op0.Q.ndim == 3), jnp.asarray([low, high], op0.Q.dtype)
    value_and_grad = lambda params: fn(params, bounds, op0, A, edges)  # positional, as gradient_check calls it
    optimizer = optax.adam(learning_rate)
    if start is None:
        params = {"schedule": jnp.full((bins,), math.log(eta_init), op0.Q.dtype),
                  "constant": jnp.full((1,), math.log(eta_init), op0.Q.dtype)}
    else:
        params = {"schedule": jnp.log(jnp.asarray(start.eta, op0.Q.dtype)),
                  "constant": jnp.full((1,), math.log(start.eta_constant), op0.Q.dtype)}
    state, history, best = optimizer.init(params), [] if start is None else list(np.asarray(start.history)), {}

    def keep(values, params):  # the lowest objective seen of each, NaN never
        for name, value in zip(("schedule", "constant"), np.asarray(values)):
            if name not in best or value < best[name][0]:
                best[name] = (float(value), np.asarray(params[name]))

    for _ in range(steps):
        (_, values), grads = value_and_grad(params)
        history.append(np.asarray(values))
        keep(values, params)
        updates, state = optimizer.update(grads, state)
        params = jax.tree.map(lambda p: jnp.clip(p, low, high), optax.apply_updates(params, updates))
    (_, values), _ = value_and_grad(params)
    keep(values, params)
    (eps_schedule, schedule), (eps_constant, constant) = best["schedule"], best["constant"]
    return Design(np.asarray(edges), np.exp(schedule), float(np.exp(constant[0])), math.exp(eps_schedule), math.exp(eps_constant),
                  np.asarray(history).reshape(-1, 2))


def gradient_check(
    op0: OrderParameters, A: jax.Array, edges, eta, *, h: float = 1e-2, solver: str = "tsit5", rtol: float = 1e-6,
    atol: float = 1e-9, max_steps: int = 4096,
) -> dict:
    """:func:`design`'s gradient against a central finite difference, along the direction that
    scales every bin's rate of the schedule ``eta`` at once: ``{"ad": ..., "fd": ...}``, the
    derivative of the objective (mean ``log eps_g(T)``) in ``log eta``. Three solves with
    gradients: affordable once per study, and what tells whether ``rtol`` is tight enough.
    The solver settings default to :func:`design`'s: pass the ones the design uses."""
    edges = jnp.asarray(edges, op0.Q.dtype)
    fn, unbounded = _objective(solver, rtol, atol, max_steps, op0.Q.ndim == 3), jnp.asarray([-math.inf, math.inf], op0.Q.dtype)
    at = lambda shift: fn({"schedule": jnp.log(jnp.asarray(eta, op0.Q.dtype)) + shift,
                           "constant": jnp.log(jnp.asarray(eta, op0.Q.dtype))[:1]}, unbounded, op0, A, edges)
    (_, values), grads = at(0.0)
    (_, up), _ = at(h)
    (_, down), _ = at(-h)
    return {"ad": float(jnp.sum(grads["schedule"])), "fd": float((up[0] - down[0]) / (2 * h)), "h": h, "value": float(values[0])}


@functools.lru_cache(maxsize=None)
def _objective(solver: str, rtol: float, atol: float, max_steps: int, batched: bool):
    """``log eps_g(T)`` of the schedule and of the constant (their sum, and each) with its
    gradient, jitted once per solver setting: the bounds of the log-rates, the setups and the
    edges are arguments, so a design continued in rounds, and its gradient check (unbounded),
    compile once."""

    def final_log_eps(log_eta, bounds, op, a, edges):
        schedule = jnp.exp(jnp.clip(log_eta, bounds[0], bounds[1]))  # one rate per bin (the constant arrives broadcast by both())
        solution = solve_ode(op, a, schedule, edges[jnp.asarray([0, -1])], eta_edges=edges, solver=solver, rtol=rtol, atol=atol,
                             max_steps=max_steps)
        return jnp.log(solution.eps_g[-1])

    def objective(log_eta, bounds, op0, A, edges):
        if batched:
            return jnp.mean(jax.vmap(final_log_eps, in_axes=(None, None, 0, 0, None))(log_eta, bounds, op0, A, edges))
        return final_log_eps(log_eta, bounds, op0, A, edges)

    def both(params, bounds, op0, A, edges):  # the schedule and the constant (a schedule of equal bins) as one vmapped solve
        log_etas = jnp.stack([params["schedule"], jnp.broadcast_to(params["constant"], params["schedule"].shape)])
        values = jax.vmap(objective, in_axes=(0, None, None, None, None))(log_etas, bounds, op0, A, edges)
        return values.sum(), values

    return jax.jit(jax.value_and_grad(both, has_aux=True))


def rates_per_save(edges, eta, ts) -> np.ndarray:
    """The piecewise-constant schedule ``eta`` on ``edges`` as :func:`~mdl_jax.online.simulate_runs`
    takes it: for each save time ``ts[i]``, the rate of the samples since ``ts[i - 1]`` (the
    bin that holds ``ts[i - 1]``; ``ts[0]``'s value is never used). Every edge must be a save
    time, so that no stretch between saves spans two bins."""
    edges, eta, ts = np.asarray(edges, np.float64), np.asarray(eta, np.float64), np.asarray(ts, np.float64)
    if eta.shape != (len(edges) - 1,):
        raise ValueError(f"eta needs one rate per bin: {len(edges) - 1} for {len(edges)} edges, got shape {eta.shape}")
    if not np.all(np.isin(edges, ts)):
        raise ValueError("every bin edge must be a save time (np.union1d(ts, edges)), so that each stretch between saves "
                         "has one rate")
    before = np.concatenate([ts[:1], ts[:-1]])
    return eta[np.clip(np.searchsorted(edges, before, side="right") - 1, 0, len(eta) - 1)]
