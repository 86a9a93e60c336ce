"""Online learning of a mode-decomposed committee machine: mean-field ODEs and simulated SGD.

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

import functools
import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree


def g(u: jax.Array) -> jax.Array:
    """The transfer function ``erf(u / sqrt 2)``."""
    return jax.scipy.special.erf(u / math.sqrt(2.0))


def g_prime(u: jax.Array) -> jax.Array:
    return math.sqrt(2.0 / math.pi) * jnp.exp(-(u**2) / 2)


class Committee(NamedTuple):
    """First layer of a committee machine, ``W = xi diag(sigma) xi_hat^T``."""

    xi_hat: jax.Array  # (d, p) upstream patterns
    sigma: jax.Array  # (p,) importances
    xi: jax.Array  # (k, p) downstream patterns

    def weights(self) -> jax.Array:
        """``W`` of shape ``(k, d)``."""
        return (self.xi * self.sigma) @ self.xi_hat.T


class OrderParameters(NamedTuple):
    Q: jax.Array  # (m, m) student-student
    M: jax.Array  # (m, k) student-teacher
    P: jax.Array  # (k, k) teacher-teacher, fixed


def modes_for_load(alpha: float, d: int) -> int:
    """``p = floor(alpha ln d)``, the number of modes at mode load ``alpha``."""
    p = math.floor(alpha * math.log(d))
    if p < 1:
        raise ValueError(f"mode load alpha = {alpha} gives p = floor(alpha ln {d}) = {p} < 1 modes; raise alpha or d")
    return p


def init_teacher_student(
    key: jax.Array, d: int, p: int, k: int, *, dtype=None, nested: bool = False, redraw_above: float | None = None,
) -> tuple[Committee, Committee]:
    """Teacher and initial student: every factor entry i.i.d. ``N(0, (ln d)^(-1/3))``.

    The student shares the teacher's ``xi`` and ``sigma`` and draws its own ``xi_hat``. With
    ``nested``, mode ``a`` of every factor comes from ``fold_in(factor key, a)`` alone, so
    committees drawn from one key with ``p' < p`` modes are the first ``p'`` modes of the
    ``p``-mode one (teachers shared across mode loads). ``redraw_above``: the authors' rule,
    the student is redrawn once (from ``fold_in(key, 1)``) when
    ``(mean Q - mean P)^2 / 2 > redraw_above`` (they use 0.01).
    """
    scale = math.log(d) ** (-1.0 / 6.0)
    k_hat, k_sigma, k_xi, k_student = jax.random.split(key, 4)
    dtype = dtype or jnp.float32
    if nested:
        columns = lambda kk, rows: scale * jax.vmap(lambda a: jax.random.normal(jax.random.fold_in(kk, a), (rows,), dtype),
                                                    out_axes=1)(jnp.arange(p))
    else:
        columns = lambda kk, rows: scale * jax.random.normal(kk, (rows, p), dtype)
    teacher = Committee(columns(k_hat, d), columns(k_sigma, 1)[0], columns(k_xi, k))
    student = teacher._replace(xi_hat=columns(k_student, d))
    if redraw_above is not None:
        op = order_parameters(student.weights(), teacher.weights())
        redraw = (jnp.mean(op.Q) - jnp.mean(op.P)) ** 2 / 2 > redraw_above
        again = teacher._replace(xi_hat=columns(jax.random.fold_in(k_student, 1), d))
        student = jax.tree.map(lambda a, b: jnp.where(redraw, b, a), student, again)
    return teacher, student


def order_parameters(student_w: jax.Array, teacher_w: jax.Array) -> OrderParameters:
    """``Q, M, P`` of weights ``W`` (``m x d``) and ``W*`` (``k x d``)."""
    d = student_w.shape[1]
    return OrderParameters(student_w @ student_w.T / d, student_w @ teacher_w.T / d, teacher_w @ teacher_w.T / d)


def mode_coupling(committee: Committee) -> jax.Array:
    """``A = xi diag(sigma)^2 xi^T`` (``m x m``), the fixed metric of the student's updates."""
    return (committee.xi * committee.sigma**2) @ committee.xi.T


def covariance(op: OrderParameters) -> jax.Array:
    """Covariance ``[[Q, M], [M^T, P]]`` of the fields ``(lambda, lambda*)``."""
    return jnp.block([[op.Q, op.M], [op.M.T, op.P]])


def _asin(x):
    return jnp.arcsin(jnp.clip(x, -1.0, 1.0))


def i2(c11, c12, c22):
    """``E[g(u_1) g(u_2)]`` for fields of covariance entries ``c``."""
    return (2 / math.pi) * _asin(c12 / jnp.sqrt((1 + c11) * (1 + c22)))


def i3(c11, c12, c13, c23, c33):
    """``E[g'(u_1) u_2 g(u_3)]``."""
    lam3 = (1 + c11) * (1 + c33) - c13**2
    return (2 / math.pi) * (c23 * (1 + c11) - c12 * c13) / ((1 + c11) * jnp.sqrt(lam3))


def i4(c11, c12, c13, c14, c22, c23, c24, c33, c34, c44):
    """``E[g'(u_1) g'(u_2) g(u_3) g(u_4)]``."""
    lam4 = (1 + c11) * (1 + c22) - c12**2
    lam0 = lam4 * c34 - c23 * c24 * (1 + c11) - c13 * c14 * (1 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    lam1 = lam4 * (1 + c33) - c23**2 * (1 + c11) - c13**2 * (1 + c22) + 2 * c12 * c13 * c23
    lam2 = lam4 * (1 + c44) - c24**2 * (1 + c11) - c14**2 * (1 + c22) + 2 * c12 * c14 * c24
    return 4 / (math.pi**2 * jnp.sqrt(lam4)) * _asin(lam0 / jnp.sqrt(lam1 * lam2))


def _output_weights(m: int, k: int, dtype) -> jax.Array:
    """``v`` with ``y_hat - y = sum_c v_c g(u_c)``: ``1/m`` on students, ``-1/k`` on teachers."""
    return jnp.concatenate([jnp.full(m, 1.0 / m, dtype), jnp.full(k, -1.0 / k, dtype)])


def expectations(op: OrderParameters) -> tuple[jax.Array, jax.Array]:
    """``E[delta_i u_j]`` (``m x (m+k)``, fields ``u = (lambda, lambda*)``) and ``E[delta_i delta_j]``.

    ``I3`` is broadcast over every ``(i, j, c)``. ``I4(i, j, c, e)`` is symmetric under
    ``i <-> j`` and under ``c <-> e``, so it is evaluated on the upper triangles of both pairs
    only (3.3x fewer of the integrals that dominate the cost at m = k = 8), the off-diagonal
    ``(c, e)`` terms counted twice, and ``E[delta delta]`` is filled in symmetrically.
    """
    m, k = op.M.shape
    c = covariance(op)
    v = _output_weights(m, k, c.dtype)
    diag = jnp.diag(c)
    s = slice(0, m)
    # I3[i, j, c] with (1, 2, 3) = (student i, any field j, any field c)
    i3_all = i3(diag[s][:, None, None], c[s][:, :, None], c[s][:, None, :], c[None, :, :], diag[None, None, :])
    e_delta_u = jnp.einsum("ijc,c->ij", i3_all, v) / m
    # I4[i, j, c, e] with (1, 2, 3, 4) = (student i, student j, field c, field e), i <= j and c <= e
    rows, cols = np.triu_indices(m)
    first, second = np.triu_indices(m + k)
    i, j, f, e = rows[:, None], cols[:, None], first[None, :], second[None, :]
    i4_upper = i4(diag[i], c[i, j], c[i, f], c[i, e], diag[j], c[j, f], c[j, e], diag[f], c[f, e], diag[e])
    weights = v[first] * v[second] * np.where(first == second, 1.0, 2.0)
    upper = jnp.zeros((m, m), c.dtype).at[rows, cols].set(i4_upper @ weights / m**2)
    return e_delta_u, upper + jnp.triu(upper, 1).T


def generalisation_error(op: OrderParameters) -> jax.Array:
    """``eps_g = E[(y_hat - y)^2] / 2`` in closed form."""
    m, k = op.M.shape
    c = covariance(op)
    v = _output_weights(m, k, c.dtype)
    diag = jnp.diag(c)
    return 0.5 * v @ i2(diag[:, None], c, diag[None, :]) @ v


class OdeArgs(NamedTuple):
    P: jax.Array  # (k, k)
    A: jax.Array  # (m, m)
    eta: jax.Array  # learning rate


def vector_field(t, y: tuple[jax.Array, jax.Array], args: OdeArgs) -> tuple[jax.Array, jax.Array]:
    """``(dQ/dt, dM/dt)`` of the mean-field dynamics (module docstring)."""
    Q, M = y
    m = Q.shape[0]
    e_delta_u, e_delta_delta = expectations(OrderParameters(Q, M, args.P))
    e_delta_lambda, e_delta_teacher = e_delta_u[:, :m], e_delta_u[:, m:]
    a_dl = args.A @ e_delta_lambda
    dq = -args.eta * (a_dl + a_dl.T) + args.eta**2 * args.A @ e_delta_delta @ args.A
    dm = -args.eta * args.A @ e_delta_teacher
    return dq, dm


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
    approximates the Jacobian, so the Jacobian (``jax.jacfwd`` of the flattened state) is
    refreshed every ``jacobian_every`` accepted steps rather than at each. That, and steps not
    bound by stability, suit the stiff late phase of Fig. 4's dynamics (``benchmarks/ode.py
    --table`` measures it against the Runge-Kutta schemes). Dense output: cubic Hermite. For
    autonomous vector fields only (as the mean-field ODE): every stage sees the step's start time.
    """

    jacobian_every: int = eqx.field(static=True, default=10)
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        flat, unravel = ravel_pytree(y0)
        field = lambda y: ravel_pytree(terms.vf(t0, unravel(y), args))[0]
        return jax.jacfwd(field)(flat), jnp.zeros((), jnp.int32), field(flat)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y, unravel = ravel_pytree(y0)
        field = lambda y: ravel_pytree(terms.vf(t0, unravel(y), args))[0]  # autonomous
        jacobian, age, f0 = solver_state
        refresh = age + 1 >= self.jacobian_every
        jacobian = jax.lax.cond(refresh, lambda: jax.jacfwd(field)(y), lambda: jacobian)
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
    "rosenbrock23": Rosenbrock23,  # linearly implicit, one LU per step, Jacobian every 10 steps
}


def solve_ode(
    op0: OrderParameters, A: jax.Array, eta: jax.Array | float, ts: jax.Array, *,
    method: str = "adaptive", d: int | None = None, rtol: float = 3e-7, atol: float = 3e-10, solver: str = "rosenbrock23",
    max_steps: int | None = 100_000, adjoint: diffrax.AbstractAdjoint | None = None, throw: bool = True,
) -> OdeSolution:
    """Integrates the mean-field ODE from ``op0`` and saves at ``ts`` (increasing, from 0).

    Args:
      op0: initial order parameters (``P`` stays fixed).
      A: ``xi diag(sigma)^2 xi^T``.
      eta: learning rate (may be traced, and differentiated).
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
    if method == "adaptive":
        if solver not in ADAPTIVE_SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(ADAPTIVE_SOLVERS)}")
        solver, controller, dt0 = ADAPTIVE_SOLVERS[solver](), diffrax.PIDController(rtol=rtol, atol=atol), 1e-3
    elif method == "euler":
        if d is None:
            raise ValueError("method='euler' integrates with dt = 1/d: pass d")
        solver, controller, dt0 = diffrax.Euler(), diffrax.ConstantStepSize(), 1.0 / d
    else:
        raise ValueError(f"unknown method {method!r}; choose 'adaptive' or 'euler'")
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver, t0=ts[0], t1=ts[-1], dt0=dt0,
        y0=(op0.Q, op0.M), args=OdeArgs(op0.P, A, eta), saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller, max_steps=max_steps,
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(), throw=throw,
    )
    q, mm = solution.ys
    eps = jax.vmap(lambda q_, m_: generalisation_error(OrderParameters(q_, m_, op0.P)))(q, mm)
    if not throw:
        eps = jnp.where(solution.result == diffrax.RESULTS.successful, eps, jnp.nan)
    return OdeSolution(solution.ts, q, mm, eps, solution.stats["num_steps"])


class Simulation(NamedTuple):
    steps: jax.Array  # (n,) sample index nu of each measurement
    eps_g: jax.Array  # (n,) test error; (runs, n) for a group of simulate_runs
    xi_hat: jax.Array  # (d, p) final student patterns; (runs, d, p) for a group


def simulate_sgd(
    key: jax.Array, teacher: Committee, student: Committee, eta: float | jax.Array,
    save_steps: jax.Array, *, n_test: int = 10_000, block: int = 256, chunk: int = 32, test_key: jax.Array | None = None,
) -> Simulation:
    """Online SGD on the student's ``xi_hat``, one fresh sample per step: one run of
    :func:`simulate_runs` (the arguments are the same, for a single teacher-student pair)."""
    expand = lambda c: jax.tree.map(lambda a: a[None], c)
    (out,) = simulate_runs(key, [(expand(teacher), expand(student))], eta, save_steps, n_test=n_test, block=block,
                           chunk=chunk, test_key=test_key)
    return Simulation(out.steps, out.eps_g[0], out.xi_hat[0])


class _SideBySide(NamedTuple):
    """Runs whose modes sit side by side: the patterns of every run are one ``(d, P)`` matrix,
    the modes of group ``c`` (``runs_c`` runs of ``p_c`` modes) one slice of its columns."""

    w_teacher: jax.Array  # (all runs x k, d), over sqrt d
    couplings: list[jax.Array]  # per group (runs, m, p): lambda = coupling @ xi_hat^T x
    runs: list[int]
    modes: list[int]
    eta: jax.Array

    @classmethod
    def of(cls, groups, eta) -> "_SideBySide":
        d = groups[0][1].xi_hat.shape[1]
        w_teacher = jnp.concatenate([jax.vmap(Committee.weights)(t).reshape(-1, d) for t, _ in groups]) / math.sqrt(d)
        couplings = [s.xi * s.sigma[:, None, :] / math.sqrt(d) for _, s in groups]
        return cls(w_teacher, couplings, [c.shape[0] for c in couplings], [c.shape[2] for c in couplings],
                   jnp.asarray(eta, w_teacher.dtype))

    def slices(self):
        edges = np.cumsum([0] + [r * p for r, p in zip(self.runs, self.modes)])
        return zip(edges[:-1], edges[1:], self.runs, self.modes)

    def labels(self, x: jax.Array) -> jax.Array:
        """Teacher outputs, ``(n, all runs)``."""
        return jnp.mean(g(x @ self.w_teacher.T).reshape(x.shape[0], sum(self.runs), -1), axis=2)

    def fields(self, h: jax.Array) -> list[jax.Array]:
        """``h = xi_hat^T x`` side by side ``(..., P)`` -> the fields of each group ``(..., runs, m)``."""
        return [jnp.einsum("...rp,rmp->...rm", h[..., lo:hi].reshape(*h.shape[:-1], r, p), c)
                for (lo, hi, r, p), c in zip(self.slices(), self.couplings)]

    def chunk_step(self, xi_hat: jax.Array, inputs) -> tuple[jax.Array, None]:
        """SGD on the samples of one chunk, one at a time, touching ``chunk x P`` numbers per
        sample: with ``H = X xi_hat`` and ``G = X X^T``, the field of sample ``i`` after the
        updates ``xi_hat -= x_j u_j^T`` of the samples ``j < i`` is ``H_i - sum_j G_ij u_j``;
        the patterns are updated once, ``xi_hat -= X^T U``. Inactive samples take no step."""
        x, y, active = inputs  # (chunk, d), (chunk, all runs), (chunk,)
        h0, gram = x @ xi_hat, x @ x.T
        m = self.couplings[0].shape[1]

        def sample(i, u):  # u: (chunk, P), the steps of the samples before i (zero after)
            lambdas = self.fields(h0[i] - gram[i] @ u)
            errors = jnp.concatenate([jnp.mean(g(lam), axis=1) for lam in lambdas]) - y[i]
            step = jnp.concatenate([jnp.einsum("rm,rmp->rp", e[:, None] * g_prime(lam), c).reshape(-1) for lam, e, c in
                                    zip(lambdas, jnp.split(errors, np.cumsum(self.runs)[:-1]), self.couplings)])
            return u.at[i].set(jnp.where(active[i], (self.eta / m) * step, 0.0))

        u = jax.lax.fori_loop(0, x.shape[0], sample, jnp.zeros((x.shape[0], xi_hat.shape[1]), xi_hat.dtype), unroll=True)
        return xi_hat - x.T @ u, None

    def test_error(self, xi_hat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        """``eps_g`` of every run on inputs ``x`` with teacher outputs ``y``."""
        weights = jnp.concatenate([w.reshape(x.shape[1], -1) for w in self.fields(xi_hat)], axis=1)  # (d, runs m)
        y_hat = jnp.mean(g(x @ weights).reshape(x.shape[0], sum(self.runs), -1), axis=2)
        return 0.5 * jnp.mean((y_hat - y) ** 2, axis=0)


def simulate_runs(
    key: jax.Array, groups, eta: float | jax.Array, save_steps: jax.Array, *,
    n_test: int = 10_000, block: int = 256, chunk: int = 32, test_key: jax.Array | None = None,
) -> list[Simulation]:
    """Online SGD of many teacher-student runs that see one stream of inputs (common random numbers).

    Each run learns its student's ``xi_hat`` by SGD on its own teacher's labels of the shared
    samples ``x_nu ~ N(0, I_d)``, so the runs of one call are correlated only through the
    inputs. Drawing the inputs once for all runs, and taking ``chunk`` samples at once
    (:meth:`_SideBySide.chunk_step`: exactly one-sample-at-a-time SGD), make a step cost
    about its arithmetic. Samples are drawn ``block`` at a time; the stream of sample ``nu``
    depends only on ``(key, nu // block)``, whatever the saves or the runs.

    Args:
      key: randomness of the training samples (and of fresh test samples).
      groups: ``(teachers, students)`` pairs of :class:`Committee` with a leading run axis,
        one pair per mode count (the students' ``xi``, ``sigma`` are their teachers'); every
        run has the same ``d`` and ``m = k``.
      eta: learning rate.
      save_steps: increasing sample counts ``nu`` at which ``eps_g`` is measured (``t = nu / d``).
      n_test: test samples per measurement.
      block, chunk: samples drawn, and taken, at once (``chunk`` divides ``block``).
      test_key: measure every ``eps_g`` on one fixed set of ``n_test`` samples drawn from it
        (the authors' protocol), else on fresh samples at each measurement.

    Returns:
      One :class:`Simulation` per group: ``eps_g`` (runs, n) and ``xi_hat`` (runs, d, p).
    """
    if block % chunk:
        raise ValueError(f"chunk = {chunk} must divide block = {block}")
    runs, (d, dtype) = _SideBySide.of(groups, eta), (groups[0][1].xi_hat.shape[1], groups[0][1].xi_hat.dtype)
    k_train, k_test = jax.random.split(key)

    def run_to(xi_hat, start, stop):
        """Samples ``start .. stop - 1``; a block cut by a save is taken twice, each time masked."""

        def per_block(b, xi_hat):
            x = jax.random.normal(jax.random.fold_in(k_train, b), (block, d), dtype)
            index = b * block + jnp.arange(block)
            split = lambda a: a.reshape(block // chunk, chunk, *a.shape[1:])
            return jax.lax.scan(runs.chunk_step, xi_hat, (split(x), split(runs.labels(x)), split((index >= start) & (index < stop))))[0]

        return jax.lax.fori_loop(start // block, (stop + block - 1) // block, per_block, xi_hat)

    fixed = None if test_key is None else jax.random.normal(test_key, (n_test, d), dtype)
    fixed_labels = None if fixed is None else runs.labels(fixed)  # once

    def interval(carry, index):
        xi_hat, start = carry
        xi_hat = run_to(xi_hat, start, save_steps[index])
        x = jax.random.normal(jax.random.fold_in(k_test, index), (n_test, d), dtype) if fixed is None else fixed
        return (xi_hat, save_steps[index]), runs.test_error(xi_hat, x, runs.labels(x) if fixed is None else fixed_labels)

    xi_hat0 = jnp.concatenate([jnp.swapaxes(s.xi_hat, 0, 1).reshape(d, -1) for _, s in groups], axis=1)  # (d, P)
    (xi_hat, _), eps = jax.lax.scan(interval, (xi_hat0, jnp.zeros((), save_steps.dtype)), jnp.arange(len(save_steps)))
    eps_groups = jnp.split(eps.T, np.cumsum(runs.runs)[:-1])
    patterns = [jnp.swapaxes(xi_hat[:, lo:hi].reshape(d, r, p), 0, 1) for lo, hi, r, p in runs.slices()]
    return [Simulation(save_steps, e, x) for e, x in zip(eps_groups, patterns)]


class TheoryVsSimulation(NamedTuple):
    """One configuration ``(d, alpha)`` of the letter's Fig. 4, over teachers (host arrays)."""

    p: int  # modes, floor(alpha ln d)
    eps_ode: np.ndarray  # (teachers, T) mean-field prediction
    eps_sim: np.ndarray  # (teachers, seeds, T) online SGD
    M_final: np.ndarray  # (teachers, m, k) student-teacher overlap at the end (ODE)
    ode_steps: np.ndarray  # (teachers,) adaptive solver steps


def _shard_seeds(keys: jax.Array, axis: int = 0) -> jax.Array:
    """``keys`` spread over the local devices along their seed ``axis`` when the devices divide
    it, as they are otherwise. With one CPU device per core each core simulates its share of
    the independent runs (1.4x for 8 seeds on 2 cores); the numbers are those of one device up
    to rounding, which a long run can amplify late in learning."""
    devices = jax.local_devices()
    if len(devices) < 2 or keys.shape[axis] % len(devices):
        return keys
    mesh = jax.sharding.Mesh(np.asarray(devices), ("seeds",))
    spec = jax.sharding.PartitionSpec(*[None] * axis, "seeds")
    return jax.device_put(keys, jax.sharding.NamedSharding(mesh, spec))


@functools.lru_cache(maxsize=None)
def _compiled_solve(options: tuple) -> Callable:
    """:func:`solve_ode` jitted once per set of keyword options (``eta`` and ``ts`` traced)."""
    return jax.jit(lambda op0, a, eta, ts: solve_ode(op0, a, eta, ts, **dict(options)))


def solve_each(op0: OrderParameters, A: jax.Array, eta: float, ts: jax.Array, **solve_kwargs) -> OdeSolution:
    """:func:`solve_ode` for each of a batch of initial conditions (leading axis), one at a time
    through one compiled solve, spread round-robin over the local devices (one CPU device per
    core solves its share in parallel). A vmapped adaptive solve would advance every member in
    lockstep at the pace of the stiffest, costing the batch size times its steps."""
    solve = _compiled_solve(tuple(sorted(solve_kwargs.items())))
    devices = jax.local_devices()
    eta, ts = jnp.asarray(eta, A.dtype), jnp.asarray(ts)
    solutions = [solve(*jax.device_put(jax.tree.map(lambda x: x[i], (op0, A)) + (eta, ts), devices[i % len(devices)]))
                 for i in range(A.shape[0])]  # dispatched asynchronously, gathered below
    return jax.tree.map(lambda *leaves: jnp.stack([jax.device_get(x) for x in leaves]), *solutions)


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
    common_inputs: bool = True, solver: str = "rosenbrock23", dtype=None, simulation_dtype=None,
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
    """
    setups = teacher_student_groups(configurations, hidden=hidden, teachers=teachers, seed=seed, redraw_above=redraw_above,
                                    dtype=dtype)
    unique = list(setups)
    ops = [jax.vmap(lambda t, s: order_parameters(s.weights(), t.weights()))(t, s) for _, t, s in setups.values()]
    couplings = [jax.vmap(mode_coupling)(s) for _, _, s in setups.values()]
    theory = solve_each(jax.tree.map(lambda *a: jnp.concatenate(a), *ops), jnp.concatenate(couplings), eta, ts, solver=solver)
    eps_sim = {}
    for d in dict.fromkeys(d for d, _ in unique):
        at_d = [c for c in unique if c[0] == d]
        groups = jax.tree.map(lambda a: a.astype(simulation_dtype or a.dtype), [setups[c][1:] for c in at_d])
        base = jax.random.fold_in(jax.random.PRNGKey(seed + 1), d)
        steps = jnp.round(ts * d).astype(jnp.int32)

        def simulate(key, groups, test_key):
            return [o.eps_g for o in simulate_runs(key, groups, eta, steps, n_test=n_test, test_key=test_key if fixed_test else None)]

        if common_inputs:
            per_seed = jax.jit(jax.vmap(simulate, in_axes=(0, None, None)))
            out = per_seed(_shard_seeds(jax.random.split(base, seeds)), groups, jax.random.fold_in(base, seeds))
            eps = [np.swapaxes(np.asarray(e, np.float64), 0, 1) for e in out]  # (teachers, seeds, T)
        else:
            alone = lambda key, groups, test_key: simulate(key, jax.tree.map(lambda a: a[None], groups), test_key)
            per_teacher = jax.jit(jax.vmap(jax.vmap(alone, in_axes=(0, None, None))))
            keys = jnp.stack([jax.random.split(jax.random.fold_in(base, j), seeds) for j in range(teachers)])
            test_keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, j), seeds) for j in range(teachers)])
            eps = [np.asarray(e, np.float64)[:, :, 0] for e in per_teacher(_shard_seeds(keys, 1), groups, test_keys)]
        eps_sim.update(zip(at_d, eps))
    out = {}
    for index, c in enumerate(setups):
        rows = slice(index * teachers, (index + 1) * teachers)
        out[c] = TheoryVsSimulation(setups[c][0], np.asarray(theory.eps_g[rows]), eps_sim[c], np.asarray(theory.M[rows, -1]),
                                    np.asarray(theory.num_steps[rows]))
    return [out[int(d), float(alpha)] for d, alpha in configurations]


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


def plateau_share(ts: jax.Array, eps: jax.Array, *, slope: float = 0.2, floor: float = 1e-6) -> float:
    """Share of log-time (over ``ts > 0``, log-spaced) in which the error is flat:
    ``|d ln eps / d ln t| < slope`` on each interval of the grid, weighted by its length in
    ``ln t``, up to the first time ``eps`` falls below ``floor * eps[0]``: a learned teacher's
    error then sits at the solver's or the test set's floor, flat or not by rounding alone."""
    ts, eps = np.asarray(ts), np.asarray(eps)
    keep = ts > 0
    log_t, log_eps = np.log(ts[keep]), np.log(np.maximum(eps[keep], 1e-300))
    below = np.nonzero(eps[keep] < floor * float(eps[0]))[0]
    intervals = len(log_t) - 1 if not below.size else max(below[0], 1)  # intervals that end at or before the floor
    widths = np.diff(log_t)[:intervals]
    flat = np.abs(np.diff(log_eps)[:intervals] / widths) < slope
    return float(np.sum(widths * flat) / np.sum(widths))


def time_to_fraction(ts: jax.Array, eps: jax.Array, *, fraction: float = 0.01) -> float | None:
    """First saved time at which ``eps <= fraction * eps[0]``; ``None`` if never."""
    below = np.nonzero(np.asarray(eps) <= fraction * float(np.asarray(eps)[0]))[0]
    return float(np.asarray(ts)[below[0]]) if below.size else None


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
