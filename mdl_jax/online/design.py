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
    max_steps: int = 4096,
) -> Design:
    """Optimises a piecewise-constant schedule and the best constant rate for ``eps_g`` at
    ``edges[-1]``, starting both at ``eta_init`` (module docstring).

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
    """
    edges = jnp.asarray(edges, op0.Q.dtype)
    if edges.ndim != 1 or edges.shape[0] < 2 or float(edges[0]) != 0.0 or not bool(jnp.all(jnp.diff(edges) > 0)):
        raise ValueError("edges must increase from 0, at least two of them")
    if not eta_min <= eta_init <= eta_max:
        raise ValueError(f"eta_init = {eta_init} must lie in [eta_min, eta_max] = [{eta_min}, {eta_max}]")
    batched = op0.Q.ndim == 3
    bins, ts = edges.shape[0] - 1, edges[jnp.asarray([0, -1])]
    low, high = math.log(eta_min), math.log(eta_max)

    def final_log_eps(log_eta, op, a):
        eta = jnp.exp(jnp.clip(log_eta, low, high))
        schedule = jnp.broadcast_to(eta, (bins,))
        solution = solve_ode(op, a, schedule, ts, eta_edges=edges, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
        return jnp.log(solution.eps_g[-1])

    def objective(log_eta):
        if batched:
            return jnp.mean(jax.vmap(final_log_eps, in_axes=(None, 0, 0))(log_eta, op0, A))
        return final_log_eps(log_eta, op0, A)

    def both(params):  # one program for the schedule and the constant: one compilation
        values = (objective(params["schedule"]), objective(params["constant"]))
        return values[0] + values[1], jnp.stack(values)

    value_and_grad = jax.jit(jax.value_and_grad(both, has_aux=True))
    optimizer = optax.adam(learning_rate)
    params = {"schedule": jnp.full((bins,), math.log(eta_init), op0.Q.dtype),
              "constant": jnp.full((1,), math.log(eta_init), op0.Q.dtype)}
    state, history = optimizer.init(params), []
    for _ in range(steps):
        (_, values), grads = value_and_grad(params)
        history.append(np.asarray(values))
        updates, state = optimizer.update(grads, state)
        params = jax.tree.map(lambda p: jnp.clip(p, low, high), optax.apply_updates(params, updates))
    (_, values), _ = value_and_grad(params)
    final = dict(zip(("schedule", "constant"), np.asarray(values)))
    return Design(np.asarray(edges), np.exp(np.asarray(params["schedule"])), float(np.exp(params["constant"][0])),
                  math.exp(final["schedule"]), math.exp(final["constant"]), np.asarray(history).reshape(-1, 2))
