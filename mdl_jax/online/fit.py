"""Fitting the mean-field ODE's inputs to simulated learning curves, with uncertainties.

The model of a curve: ``log eps_g(t)`` of :func:`mdl_jax.online.solve_ode` started from the
order parameters of a teacher and an initial student (letter, Eq. 7 ff.). Any subset of its
inputs is fitted, the rest held at the given values:

* ``eta``: the learning rate (shared by every curve), fitted as ``log eta``;
* ``sigma``: the teacher's mode strengths ``sigma*`` (per teacher; the student shares them,
  as in the letter's setup), fitted as ``log |sigma*_a|`` with the signs kept;
* ``init_scale``: a factor ``c`` on the initial student's patterns (``Q_0 -> c^2 Q_0``,
  ``M_0 -> c M_0``; shared), fitted as ``log c``.

The objective is least squares on ``log eps_g`` at the saved times after ``ts[0]``: the ODE
against the mean over seeds of each teacher's simulated ``log eps_g``. It is minimised by
Levenberg-Marquardt with the Jacobian from forward-mode differentiation through
``diffeqsolve`` (``jax.jacfwd``).

Uncertainties come from the curvature at the optimum, the Gauss-Newton approximation
``H = J^T J``, with the seeds' own spread as the noise: the residuals of one teacher are a mean
over ``S`` seeds whose covariance across times, ``C / S``, is estimated from the seeds (a
sandwich ``H^-1 J^T (C / S) J H^-1``, which keeps the strong correlation of one run's errors
across times). With one seed per teacher, the residuals' own variance stands in for it
(independent errors assumed, stated in :attr:`FitResult.noise`). A direction the curves do not
determine has near-zero curvature and gets a large variance, not a confident value: ``H`` is
inverted with a ridge of ``1e-12`` of its trace, never truncated.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import optax

from mdl_jax.online.committee import Committee, OrderParameters, mode_coupling, order_parameters
from mdl_jax.online.ode import solve_ode

FITTABLE = ("eta", "sigma", "init_scale")
MAX_LOG_STEP = 2.0


class FitResult(NamedTuple):
    """The fitted inputs, their standard errors and correlations.

    Attributes:
      values: fitted inputs on their natural scale (``eta`` and ``init_scale`` scalars,
        ``sigma`` ``(teachers, p)``), plus the fixed ones as given.
      stderr: standard errors of the fitted inputs on their natural scale (from the log-scale
        errors by the delta method: ``se(x) = x se(log x)``).
      correlation: ``(n, n)`` correlation matrix of the fitted log-parameters, in the order of
        ``names``.
      names: one label per fitted scalar: ``eta``, ``init_scale``, ``sigma[i,a]`` (teacher
        ``i``, mode ``a``).
      cost: sum of squared residuals at every accepted Levenberg-Marquardt iterate.
      iterations: iterations taken.
      converged: the relative decrease of the cost fell below the tolerance.
      noise: ``seeds`` (covariance across times from the seeds) or ``residuals`` (one seed:
        independent errors of the residuals' variance).
    """

    values: dict
    stderr: dict
    correlation: np.ndarray
    names: tuple[str, ...]
    cost: np.ndarray
    iterations: int
    converged: bool
    noise: str


def _batched(committee: Committee) -> Committee:
    return committee if committee.xi_hat.ndim == 3 else jax.tree.map(lambda a: a[None], committee)


def _curves(eps: jax.Array, teachers: int) -> jax.Array:
    eps = jnp.asarray(eps)
    if eps.ndim == 1:
        eps = eps[None, None]
    elif eps.ndim == 2:
        eps = eps[None] if teachers == 1 else eps[:, None]
    if eps.ndim != 3 or eps.shape[0] != teachers:
        raise ValueError(f"eps must be (T,), (seeds, T) or (teachers, seeds, T) for {teachers} teacher(s), "
                         f"got shape {tuple(np.shape(eps))}")
    return eps


def _unpack(theta, start: dict, free: tuple[str, ...]) -> dict:
    values, offset = dict(start), 0
    for name in free:
        size = start[name].shape[0]
        values[name], offset = theta[offset:offset + size], offset + size
    return values


@functools.lru_cache(maxsize=None)
def _compiled(free: tuple[str, ...], solver: str, rtol: float, atol: float):
    """The residuals ``log eps_ode - mean log eps_sim`` (flattened over teachers and times) and
    their Jacobian, jitted once per choice of free inputs and solver (the data are arguments)."""

    def residuals(theta, start, signs, teacher, student, ts, target):
        v = _unpack(theta, start, free)
        sigma = signs * jnp.exp(v["sigma"]).reshape(signs.shape)

        def one(t: Committee, s: Committee, sig):
            t, s = t._replace(sigma=sig), s._replace(sigma=sig, xi_hat=s.xi_hat * jnp.exp(v["init_scale"][0]))
            solution = solve_ode(order_parameters(s.weights(), t.weights()), mode_coupling(s), jnp.exp(v["eta"][0]), ts,
                                 solver=solver, rtol=rtol, atol=atol, adjoint=diffrax.ForwardMode(), throw=False)
            return jnp.log(solution.eps_g[1:])

        return (jax.vmap(one)(teacher, student, sigma) - target).reshape(-1)

    return jax.jit(residuals), jax.jit(jax.jacfwd(residuals))


def fit(
    ts: jax.Array, eps: jax.Array, teacher: Committee, student: Committee, eta: float, *,
    free: Sequence[str] = ("eta",), init_scale: float = 1.0, max_iter: int = 50, tol: float = 1e-10,
    solver: str = "tsit5", rtol: float = 1e-7, atol: float = 1e-10,
) -> FitResult:
    """Fits the inputs named in ``free`` so that the ODE's ``log eps_g`` matches simulated curves.

    Args:
      ts: save times (increasing, from 0) of the curves.
      eps: simulated ``eps_g`` at ``ts``: one curve ``(T,)``, several seeds of one teacher
        ``(seeds, T)``, or ``(teachers, seeds, T)``.
      teacher, student: the committees the curves were simulated from (a leading teacher
        axis for several teachers); the student's ``sigma`` and ``xi`` are its teacher's.
      eta: the learning rate, its starting value when fitted.
      free: the inputs to fit, any of :data:`FITTABLE`; the others stay as given.
      init_scale: the factor on the initial student's patterns, its starting value when fitted.
      max_iter, tol: Levenberg-Marquardt's iteration budget and relative cost tolerance.
      solver, rtol, atol: the ODE solver of every evaluation (forward-mode differentiable).

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: an unknown or empty ``free``, a non-positive ``eta`` or ``init_scale``, curves
        whose shape does not match the teachers, or a non-positive ``eps``.
    """
    unknown = sorted(set(free) - set(FITTABLE))
    if unknown or not free:
        raise ValueError(f"free must name inputs to fit among {', '.join(FITTABLE)}, got {list(free)}")
    if not eta > 0 or not init_scale > 0:
        raise ValueError(f"eta and init_scale must be > 0, got {eta} and {init_scale}")
    teacher, student = _batched(teacher), _batched(student)
    n_teachers, p = teacher.sigma.shape
    curves = _curves(eps, n_teachers)
    if curves.shape[-1] != len(ts):
        raise ValueError(f"eps has {curves.shape[-1]} times, ts {len(ts)}")
    if not bool(jnp.all(curves[..., 1:] > 0)):
        raise ValueError("eps must be > 0 after ts[0]: the fit compares log eps_g")
    dtype = teacher.xi_hat.dtype
    log_curves = jnp.log(curves[..., 1:])
    target, seeds = log_curves.mean(1), curves.shape[1]
    signs = jnp.sign(teacher.sigma)
    start = {"eta": jnp.log(jnp.asarray([eta], dtype)), "init_scale": jnp.log(jnp.asarray([init_scale], dtype)),
             "sigma": jnp.log(jnp.abs(teacher.sigma)).reshape(-1)}
    sizes = {"eta": 1, "init_scale": 1, "sigma": n_teachers * p}
    free = tuple(name for name in FITTABLE if name in free)
    names = tuple(n for name in free for n in (
        [name] if sizes[name] == 1 else [f"sigma[{i},{a}]" for i in range(n_teachers) for a in range(p)]))
    theta0 = jnp.concatenate([start[name] for name in free])
    data = (start, signs, teacher, student, jnp.asarray(ts, dtype), target)
    residual_fn, jacobian_fn = _compiled(free, solver, rtol, atol)
    residuals = lambda theta: residual_fn(theta, *data)
    jacobian = lambda theta: jacobian_fn(theta, *data)
    theta, r = theta0, residuals(theta0)
    cost, damping, history, converged, iteration = float(r @ r), 1e-3, [float(r @ r)], False, 0
    for iteration in range(1, max_iter + 1):
        J = jacobian(theta)
        H, g = J.T @ J, J.T @ r
        while True:
            step = jnp.linalg.solve(H + damping * jnp.diag(jnp.diag(H) + 1e-30), -g)
            step = step * jnp.minimum(1.0, MAX_LOG_STEP / jnp.max(jnp.abs(step)))  # at most a factor e^2 per step
            trial = theta + step
            r_trial = residuals(trial)
            trial_cost = float(r_trial @ r_trial)
            if np.isfinite(trial_cost) and trial_cost <= cost:
                break
            damping *= 10.0
            if damping > 1e12:
                break
        if not (np.isfinite(trial_cost) and trial_cost <= cost):
            converged = True  # no step decreases the cost: at a minimum within rounding
            break
        decrease = (cost - trial_cost) / max(cost, 1e-300)
        theta, r, cost, damping = trial, r_trial, trial_cost, max(damping / 10.0, 1e-12)
        history.append(cost)
        if decrease < tol:
            converged = True
            break

    J = np.asarray(jacobian(theta), np.float64)
    H = J.T @ J
    ridge = 1e-12 * np.trace(H) * np.eye(len(theta))
    H_inv = np.linalg.inv(H + ridge)
    T1 = target.shape[1]
    if seeds > 1:
        deviations = np.asarray(log_curves - log_curves.mean(1, keepdims=True), np.float64)  # (teachers, seeds, T-1)
        noise = np.zeros((J.shape[0], J.shape[0]))
        for i in range(n_teachers):
            block = deviations[i].T @ deviations[i] / (seeds - 1) / seeds  # covariance of the seed mean
            noise[i * T1:(i + 1) * T1, i * T1:(i + 1) * T1] = block
        covariance, kind = H_inv @ J.T @ noise @ J @ H_inv, "seeds"
    else:
        variance = cost / max(J.shape[0] - len(theta), 1)
        covariance, kind = variance * H_inv, "residuals"
    se_log = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    correlation = covariance / np.maximum(np.outer(se_log, se_log), 1e-300)
    fitted = _unpack(theta, start, free)
    values = {"eta": float(jnp.exp(fitted["eta"][0])), "init_scale": float(jnp.exp(fitted["init_scale"][0])),
              "sigma": np.asarray(signs * jnp.exp(fitted["sigma"]).reshape(n_teachers, p))}
    stderr, offset = {}, 0
    for name in FITTABLE:
        if name in free:
            se = se_log[offset:offset + sizes[name]]
            stderr[name] = float(values[name] * se[0]) if sizes[name] == 1 else np.abs(values[name]) * se.reshape(n_teachers, p)
            offset += sizes[name]
    return FitResult(values, stderr, correlation, names, np.asarray(history), iteration, converged, kind)


def fit_learning_rate(
    ts: jax.Array, eps_target: jax.Array, op0: OrderParameters, A: jax.Array, *,
    eta_init: float, steps: int = 60, learning_rate: float = 0.05, **solve_kwargs,
) -> tuple[jax.Array, jax.Array]:
    """Fits eta so that the ODE's ``eps_g(ts)`` matches ``eps_target`` (e.g. a simulation).

    Minimises the mean squared difference of ``log eps_g`` over the saved times after
    ``ts[0]``, by Adam on ``log eta`` with gradients through :func:`solve_ode`, by default
    with Tsit5 at rtol 1e-6 (``solve_kwargs`` override it): reverse mode through the default
    Rosenbrock23 (its LU and Jacobian refreshes) is correct but many times slower per gradient.

    Returns:
      The fitted eta and the loss at every iteration.
    """
    solve_kwargs = {"solver": "tsit5", "rtol": 1e-6, "atol": 1e-9, **solve_kwargs}
    target = jnp.log(eps_target[1:])

    def loss(log_eta):
        solution = solve_ode(op0, A, jnp.exp(log_eta), ts, **solve_kwargs)
        return jnp.mean((jnp.log(solution.eps_g[1:]) - target) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    optimizer = optax.adam(learning_rate)
    log_eta = jnp.log(jnp.asarray(eta_init, op0.Q.dtype))
    state, history = optimizer.init(log_eta), []
    for _ in range(steps):
        value, grad = value_and_grad(log_eta)
        history.append(value)
        updates, state = optimizer.update(grad, state)
        log_eta = optax.apply_updates(log_eta, updates)
    return jnp.exp(log_eta), jnp.stack(history)
