"""The mean-field ODE of online learning as a Diffrax vector field, and its solvers.

Teacher and student have one hidden layer of erf units, ``g(u) = erf(u / sqrt 2)``, and a
mode-decomposed first layer ``W = xi diag(sigma) xi_hat^T`` (``k x d``); the outputs are
``y = (1/k) sum_r g(lambda*_r)`` and ``y_hat = (1/m) sum_i g(lambda_i)`` with
``lambda = W x / sqrt(d)``, ``x ~ N(0, I_d)`` (the letter's Eqs. 4-5). Only the student's
upstream patterns ``xi_hat`` learn; ``xi`` and ``sigma`` are the teacher's, so ``m = k``.

One SGD step on the loss ``(y_hat - y)^2 / 2`` moves the weights by
``dW = -(eta / sqrt d) A delta x^T`` with ``A = xi sigma^2 xi^T`` and
``delta_i = (y_hat - y) g'(lambda_i) / m``. For ``d -> infinity`` the order parameters
``Q = W W^T / d``, ``M = W W*^T / d`` (``P = W* W*^T / d`` is fixed) follow, in ``t = nu / d``,

.. math::
    \\dot M = -\\eta A\\, E[\\delta \\lambda^{*T}], \\qquad
    \\dot Q = -\\eta (A\\, E[\\delta \\lambda^T] + E[\\lambda \\delta^T] A) + \\eta^2 A\\, E[\\delta\\delta^T] A,

with Gaussian expectations over fields of covariance ``[[Q, M], [M^T, P]]`` in closed form
(Saad & Solla 1995; ``mdl-method-notes.md`` section 5).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mdl_jax.online.committee import OrderParameters
from mdl_jax.online.integrals import expectations, expectations_jacobian, generalisation_error


class OdeArgs(NamedTuple):
    P: jax.Array  # (k, k)
    A: jax.Array  # (m, m)
    eta: jax.Array  # learning rate (), or a schedule (B,): eta[b] on [eta_edges[b], eta_edges[b + 1])
    eta_edges: jax.Array | None = None  # (B + 1,) for a schedule


def learning_rate(t, args: OdeArgs) -> jax.Array:
    """The learning rate at time ``t``: ``args.eta``, or its schedule's value in ``t``'s bin."""
    if args.eta_edges is None:
        return args.eta
    b = jnp.clip(jnp.searchsorted(args.eta_edges, t, side="right") - 1, 0, args.eta.shape[0] - 1)
    return args.eta[b]


def vector_field(t, y: tuple[jax.Array, jax.Array], args: OdeArgs) -> tuple[jax.Array, jax.Array]:
    """``(dQ/dt, dM/dt)`` of the mean-field dynamics (module docstring)."""
    Q, M = y
    return _updates(*expectations(OrderParameters(Q, M, args.P)), args.A, learning_rate(t, args))


def _updates(e_delta_u: jax.Array, e_delta_delta: jax.Array, A: jax.Array, eta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(dQ/dt, dM/dt)`` of the expectations: linear in them."""
    m = e_delta_delta.shape[0]
    e_delta_lambda, e_delta_teacher = e_delta_u[:, :m], e_delta_u[:, m:]
    a_dl = A @ e_delta_lambda
    dq = -eta * (a_dl + a_dl.T) + eta**2 * A @ e_delta_delta @ A
    dm = -eta * A @ e_delta_teacher
    return dq, dm


def vector_field_jacobian(t, y: tuple[jax.Array, jax.Array], args: OdeArgs) -> jax.Array:
    """The Jacobian of :func:`vector_field` in the flattened state ``(Q, M)`` (as
    ``jax.flatten_util.ravel_pytree`` orders it): the expectations' derivatives by ``Q, M``
    (:func:`~mdl_jax.online.integrals.expectations_jacobian`, one reverse pass) carried to the
    field through its linear map. Equal to ``jax.jacfwd`` of the flattened field up to rounding
    (5.6e-17 at m = k = 8, d = 100), and 5x faster there (``docs/benchmarks.md``)."""
    Q, M = y
    by_state = lambda d_q, d_m: jnp.concatenate([d_q.reshape(*d_q.shape[:2], -1), d_m.reshape(*d_m.shape[:2], -1)], axis=-1)
    d_delta_u, d_delta_delta = (by_state(*d) for d in expectations_jacobian(OrderParameters(Q, M, args.P)))
    updates = jax.vmap(functools.partial(_updates, A=args.A, eta=learning_rate(t, args)), in_axes=-1, out_axes=-1)
    dq, dm = updates(d_delta_u, d_delta_delta)
    return jnp.concatenate([dq.reshape(-1, dq.shape[-1]), dm.reshape(-1, dm.shape[-1])])


class OdeSolution(NamedTuple):
    ts: jax.Array  # (n,) saved times
    Q: jax.Array  # (n, m, m)
    M: jax.Array  # (n, m, k)
    eps_g: jax.Array  # (n,)
    num_steps: jax.Array  # solver steps taken


def log_times(t_max: float, n: int, *, t_min: float = 0.1) -> jax.Array:
    """``0`` followed by ``n - 1`` log-spaced times from ``t_min`` to ``t_max``."""
    return jnp.concatenate([jnp.zeros(1), jnp.logspace(math.log10(t_min), math.log10(t_max), n - 1)])


class Rosenbrock23(diffrax.AbstractAdaptiveSolver):
    """The modified Rosenbrock triple of MATLAB's ``ode23s`` (Shampine & Reichelt, SIAM J. Sci.
    Comput. 18, 1997): second order, with a third-order error estimate, L-stable, and linearly
    implicit: each step solves three systems with one LU factorisation of ``I - h d J`` and
    evaluates the vector field twice (the third evaluation is the next step's first).

    Its second-order formula is a W-method (Wolfbrandt's): it keeps its order when ``J`` only
    approximates the Jacobian, so the Jacobian is refreshed every ``jacobian_every`` accepted
    steps rather than at each: ``jacobian(t, y, args)`` in the flattened state, else
    ``jax.jacfwd`` of the flattened vector field (:func:`solve_ode` passes
    :func:`vector_field_jacobian`). That, and steps not bound by stability, suit the stiff late
    phase of Fig. 4's dynamics (``benchmarks/ode.py --table`` measures it against the
    Runge-Kutta schemes). Dense output: cubic Hermite. For autonomous vector fields only (as
    the mean-field ODE): every stage sees the step's start time.
    """

    jacobian_every: int = eqx.field(static=True, default=10)
    jacobian: Callable | None = eqx.field(static=True, default=None)
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        return 2

    def _jacobian(self, field, unravel, t, y, args):
        return jax.jacfwd(field)(y) if self.jacobian is None else self.jacobian(t, unravel(y), args)

    def init(self, terms, t0, t1, y0, args):
        flat, unravel = ravel_pytree(y0)
        field = lambda y: ravel_pytree(terms.vf(t0, unravel(y), args))[0]
        return self._jacobian(field, unravel, t0, flat, args), jnp.zeros((), jnp.int32), field(flat)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y, unravel = ravel_pytree(y0)
        field = lambda y: ravel_pytree(terms.vf(t0, unravel(y), args))[0]  # autonomous
        jacobian, age, f0 = solver_state
        refresh = age + 1 >= self.jacobian_every
        jacobian = jax.lax.cond(refresh, lambda: self._jacobian(field, unravel, t0, y, args), lambda: jacobian)
        h, d, e32 = t1 - t0, 1 / (2 + math.sqrt(2)), 6 + math.sqrt(2)
        lu = jax.scipy.linalg.lu_factor(jnp.eye(y.shape[0], dtype=y.dtype) - h * d * jacobian)
        solve = lambda b: jax.scipy.linalg.lu_solve(lu, b)
        k1 = solve(f0)
        f1 = field(y + 0.5 * h * k1)
        k2 = solve(f1 - k1) + k1
        y1 = y + h * k2
        f2 = field(y1)
        k3 = solve(f2 - e32 * (k2 - f1) - 2 * (k1 - f0))
        dense = dict(y0=y0, y1=unravel(y1), k0=unravel(h * f0), k1=unravel(h * f2))
        state = (jacobian, jnp.where(refresh, 0, age + 1), f2)
        return unravel(y1), unravel(h / 6 * (k1 - 2 * k2 + k3)), dense, state, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


ADAPTIVE_SOLVERS = {
    "tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8, "bosh3": diffrax.Bosh3,
    "kvaerno5": diffrax.Kvaerno5,  # implicit (ESDIRK): a Newton solve per stage, for the stiff late phase
    # linearly implicit, one LU per step, the Jacobian (assembled) every 10 steps
    "rosenbrock23": functools.partial(Rosenbrock23, jacobian=vector_field_jacobian),
}


def solve_ode(
    op0: OrderParameters, A: jax.Array, eta: jax.Array | float, ts: jax.Array, *,
    method: str = "adaptive", d: int | None = None, rtol: float = 3e-7, atol: float = 3e-10, solver: str = "rosenbrock23",
    max_steps: int | None = 100_000, adjoint: diffrax.AbstractAdjoint | None = None, throw: bool = True,
    eta_edges: jax.Array | None = None,
) -> OdeSolution:
    """Integrates the mean-field ODE from ``op0`` and saves at ``ts`` (increasing, from 0).

    Args:
      op0: initial order parameters (``P`` stays fixed).
      A: ``xi diag(sigma)^2 xi^T``.
      eta: learning rate (may be traced, and differentiated); with ``eta_edges``, a schedule:
        ``eta[b]`` on ``[eta_edges[b], eta_edges[b + 1])`` (the adaptive solver steps onto
        every edge, ``jump_ts``).
      ts: save times; ``ts[0]`` is the start.
      method: ``adaptive`` (``solver`` with a PID step-size controller) or ``euler`` (the
        authors' scheme: forward Euler with ``dt = 1/d``, one step per sample).
      d: input dimension, needed by ``euler``.
      rtol, atol: tolerances of ``adaptive``.
      solver: the scheme of ``adaptive``, one of :data:`ADAPTIVE_SOLVERS`. The default is the
        fastest that gives the same answer in ``benchmarks/ode.py --table`` (Q, M and eps_g
        within 1e-5 of a Dopri8 solve at rtol 1e-10, to t = 1e5): :class:`Rosenbrock23` at
        rtol 3e-7 (7e-6; Tsit5 needs rtol 1e-6 and 5-7 times as long).
      max_steps: step budget (``euler`` needs at least ``d * (ts[-1] - ts[0])``).
      adjoint: how gradients flow through the solve. The default,
        ``RecursiveCheckpointAdjoint``, differentiates the discrete solve exactly
        (discretise-then-optimise) with checkpointed memory, which is what a fit to data wants.
      throw: raise when the solve fails (e.g. ``max_steps`` reached); ``False``: return NaN
        errors instead (a fit's trial step then counts as rejected).
    """
    eta = jnp.asarray(eta, op0.Q.dtype)
    if (eta.ndim == 1) != (eta_edges is not None) or (eta_edges is not None and len(eta_edges) != eta.shape[0] + 1):
        raise ValueError("a schedule eta (B,) needs eta_edges (B + 1,), and a scalar eta none")
    if method == "adaptive":
        if solver not in ADAPTIVE_SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(ADAPTIVE_SOLVERS)}")
        jumps = None if eta_edges is None else jnp.asarray(eta_edges, op0.Q.dtype)
        solver, controller, dt0 = ADAPTIVE_SOLVERS[solver](), diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=jumps), 1e-3
    elif method == "euler":
        if d is None:
            raise ValueError("method='euler' integrates with dt = 1/d: pass d")
        solver, controller, dt0 = diffrax.Euler(), diffrax.ConstantStepSize(), 1.0 / d
    else:
        raise ValueError(f"unknown method {method!r}; choose 'adaptive' or 'euler'")
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver, t0=ts[0], t1=ts[-1], dt0=dt0,
        y0=(op0.Q, op0.M), args=OdeArgs(op0.P, A, eta, None if eta_edges is None else jnp.asarray(eta_edges, op0.Q.dtype)),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller, max_steps=max_steps,
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(), throw=throw,
    )
    q, mm = solution.ys
    eps = jax.vmap(lambda q_, m_: generalisation_error(OrderParameters(q_, m_, op0.P)))(q, mm)
    if not throw:
        eps = jnp.where(solution.result == diffrax.RESULTS.successful, eps, jnp.nan)
    return OdeSolution(solution.ts, q, mm, eps, solution.stats["num_steps"])


@functools.lru_cache(maxsize=None)
def _compiled_solve(options: tuple) -> Callable:
    """:func:`solve_ode` jitted once per set of keyword options (``eta``, ``ts`` and ``eta_edges`` traced)."""
    return jax.jit(lambda op0, a, eta, ts, eta_edges: solve_ode(op0, a, eta, ts, eta_edges=eta_edges, **dict(options)))


def solve_each(op0: OrderParameters, A: jax.Array, eta: float | jax.Array, ts: jax.Array, *, eta_edges: jax.Array | None = None,
               **solve_kwargs) -> OdeSolution:
    """:func:`solve_ode` for each of a batch of initial conditions (leading axis), one at a time
    through one compiled solve, spread round-robin over the local devices (one CPU device per
    core solves its share in parallel). A vmapped adaptive solve would advance every member in
    lockstep at the pace of the stiffest, costing the batch size times its steps. ``eta`` and
    ``eta_edges``: a rate, or a schedule, as :func:`solve_ode` takes them.

    Each device is fed from its own thread, in the caller's precision (``jax.enable_x64`` holds
    per thread): Diffrax checks its save times at run time through host callbacks, and a CPU
    program that holds one returns only when it has run, so solves dispatched from one thread
    would run one after the other (docs/benchmarks.md)."""
    solve = _compiled_solve(tuple(sorted(solve_kwargs.items())))
    devices = jax.local_devices()
    eta, ts = jnp.asarray(eta, A.dtype), jnp.asarray(ts)
    edges = None if eta_edges is None else jnp.asarray(eta_edges, A.dtype)

    x64 = jax.config.jax_enable_x64  # JAX's precision is set per thread (jax.enable_x64): the workers take the caller's

    def member(i: int) -> OdeSolution:
        with jax.enable_x64(x64):
            inputs = jax.tree.map(lambda x: x[i], (op0, A)) + (eta, ts, edges)
            return jax.device_get(solve(*jax.device_put(inputs, devices[i % len(devices)])))

    queues = [concurrent.futures.ThreadPoolExecutor(1) for _ in devices]  # one per device: its members in turn
    try:
        solutions = [future.result() for future in [queues[i % len(devices)].submit(member, i) for i in range(A.shape[0])]]
    finally:  # on a failure or Ctrl-C, the members not begun are dropped and nothing waits for those running
        for queue in queues:
            queue.shutdown(wait=False, cancel_futures=True)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *solutions)
