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

import math
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax


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


ADAPTIVE_SOLVERS = {
    "tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8, "bosh3": diffrax.Bosh3,
    "kvaerno5": diffrax.Kvaerno5,  # implicit (ESDIRK): a Newton solve per stage, for the stiff late phase
}


def solve_ode(
    op0: OrderParameters, A: jax.Array, eta: jax.Array | float, ts: jax.Array, *,
    method: str = "adaptive", d: int | None = None, rtol: float = 1e-6, atol: float = 1e-9, solver: str = "tsit5",
    max_steps: int | None = 100_000, adjoint: diffrax.AbstractAdjoint | None = None,
) -> OdeSolution:
    """Integrates the mean-field ODE from ``op0`` and saves at ``ts`` (increasing, from 0).

    Args:
      op0: initial order parameters (``P`` stays fixed).
      A: ``xi diag(sigma)^2 xi^T``.
      eta: learning rate (may be traced, and differentiated).
      ts: save times; ``ts[0]`` is the start.
      method: ``adaptive`` (Tsit5 with a PID step-size controller) or ``euler`` (the
        authors' scheme: forward Euler with ``dt = 1/d``, one step per sample).
      d: input dimension, needed by ``euler``.
      rtol, atol: tolerances of ``adaptive``.
      solver: the Runge-Kutta scheme of ``adaptive``, one of :data:`ADAPTIVE_SOLVERS`
        (``benchmarks/ode.py`` measures each against a fine reference).
      max_steps: step budget (``euler`` needs at least ``d * (ts[-1] - ts[0])``).
      adjoint: how gradients flow through the solve. The default,
        ``RecursiveCheckpointAdjoint``, differentiates the discrete solve exactly
        (discretise-then-optimise) with checkpointed memory, which is what a fit to data wants.
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
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(),
    )
    q, mm = solution.ys
    eps = jax.vmap(lambda q_, m_: generalisation_error(OrderParameters(q_, m_, op0.P)))(q, mm)
    return OdeSolution(solution.ts, q, mm, eps, solution.stats["num_steps"])


class Simulation(NamedTuple):
    steps: jax.Array  # (n,) sample index nu of each measurement
    eps_g: jax.Array  # (n,) test error on fresh samples
    xi_hat: jax.Array  # (d, p) final student patterns


def simulate_sgd(
    key: jax.Array, teacher: Committee, student: Committee, eta: float | jax.Array,
    save_steps: jax.Array, *, n_test: int = 10_000, block: int = 256, test_key: jax.Array | None = None,
) -> Simulation:
    """Online SGD on the student's ``xi_hat``, one fresh sample per step, as ``lax.scan``.

    Args:
      key: randomness of the training and test samples.
      teacher, student: the committees (the student's ``xi``, ``sigma`` are the teacher's).
      eta: learning rate.
      save_steps: increasing sample counts ``nu`` at which ``eps_g`` is measured on
        ``n_test`` fresh samples (``t = nu / d``).
      n_test: test samples per measurement.
      block: samples are drawn ``block`` at a time (cheaper than one draw per step); the
        stream of sample ``nu`` depends only on ``(key, nu // block)``, whatever the saves.
      test_key: measure every ``eps_g`` on one fixed set of ``n_test`` samples drawn from it
        (the authors' protocol; shared by every run given the same key) instead of fresh ones.
    """
    d = teacher.xi_hat.shape[0]
    dtype = teacher.xi_hat.dtype
    eta = jnp.asarray(eta, dtype)
    k_train, k_test = jax.random.split(key)
    w_teacher = teacher.weights()
    coupling = student.xi * student.sigma  # (m, p): lambda = coupling @ (xi_hat^T x) / sqrt d
    m = coupling.shape[0]
    root_d = math.sqrt(d)

    def sample_step(xi_hat, x):
        lam = coupling @ (xi_hat.T @ x) / root_d
        error = jnp.mean(g(lam)) - jnp.mean(g(w_teacher @ x / root_d))
        delta = error * g_prime(lam) / m
        return xi_hat - (eta / root_d) * jnp.outer(x, student.sigma * (student.xi.T @ delta))

    def run_to(xi_hat, start, stop):
        """Samples ``start .. stop - 1``, drawn one block at a time."""

        def per_block(b, xi_hat):
            x_block = jax.random.normal(jax.random.fold_in(k_train, b), (block, d), dtype)
            lo = jnp.maximum(start, b * block) - b * block
            hi = jnp.minimum(stop, (b + 1) * block) - b * block
            return jax.lax.fori_loop(lo, hi, lambda i, xh: sample_step(xh, x_block[i]), xi_hat)

        return jax.lax.fori_loop(start // block, (stop + block - 1) // block, per_block, xi_hat)

    def test_error(xi_hat, index):
        x = jax.random.normal(jax.random.fold_in(k_test, index) if test_key is None else test_key, (n_test, d), dtype)
        y_hat = jnp.mean(g(x @ xi_hat @ coupling.T / root_d), axis=1)
        y = jnp.mean(g(x @ w_teacher.T / root_d), axis=1)
        return 0.5 * jnp.mean((y_hat - y) ** 2)

    def interval(carry, index):
        xi_hat, start = carry
        stop = save_steps[index]
        xi_hat = run_to(xi_hat, start, stop)
        return (xi_hat, stop), test_error(xi_hat, index)

    (xi_hat, _), eps = jax.lax.scan(
        interval, (student.xi_hat, jnp.zeros((), save_steps.dtype)), jnp.arange(len(save_steps))
    )
    return Simulation(save_steps, eps, xi_hat)


class TheoryVsSimulation(NamedTuple):
    """One configuration ``(d, alpha)`` of the letter's Fig. 4, over teachers (host arrays)."""

    p: int  # modes, floor(alpha ln d)
    eps_ode: np.ndarray  # (teachers, T) mean-field prediction
    eps_sim: np.ndarray  # (teachers, seeds, T) online SGD
    M_final: np.ndarray  # (teachers, m, k) student-teacher overlap at the end (ODE)
    ode_steps: np.ndarray  # (teachers,) adaptive solver steps


def _shard_seeds(keys: jax.Array) -> jax.Array:
    """``keys`` (teachers, seeds, 2) spread over the local devices along the seed axis when
    they divide it, as they are otherwise. With one CPU device per core each core simulates
    its share of the independent runs (1.36x for 5 teachers x 8 seeds on 2 cores); the numbers
    are those of one device up to rounding, which a long run can amplify late in learning."""
    devices = jax.local_devices()
    if len(devices) < 2 or keys.shape[1] % len(devices):
        return keys
    mesh = jax.sharding.Mesh(np.asarray(devices), ("seeds",))
    return jax.device_put(keys, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "seeds")))


def theory_vs_simulation(
    configurations: list[tuple[int, float]], ts: jax.Array, *, hidden: int, eta: float, seeds: int, n_test: int,
    teachers: int = 1, seed: int = 0, redraw_above: float | None = None, fixed_test: bool = False, dtype=None,
) -> list[TheoryVsSimulation]:
    """The mean-field ODE against online SGD for each ``(d, alpha)`` of ``configurations``.

    Teacher ``j`` of input dimension ``d`` and its initial student come from
    ``fold_in(fold_in(PRNGKey(seed), d), j)`` with nested draws (:func:`init_teacher_student`),
    so at one ``d`` every mode load shares its first modes. Its ``seeds`` SGD runs come from
    ``split(fold_in(fold_in(PRNGKey(seed + 1), d), j), seeds)``, each measured on fresh test
    samples, or with ``fixed_test`` on one set per teacher. The ODE starts from the
    simulation's own initial order parameters. All ODEs live in the same ``(m x m, m x k)``
    space: one vmapped solve; each configuration's simulations are one vmapped program over
    teachers and seeds, measured at ``nu = round(t d)``. A configuration listed twice (one
    point of both panels) is computed once.
    """
    stack = lambda items: jax.tree.map(lambda *leaves: jnp.stack(leaves), *items)
    unique = list(dict.fromkeys((int(d), float(alpha)) for d, alpha in configurations))
    setups = []
    for d, alpha in unique:
        p = modes_for_load(alpha, d)
        pairs = [init_teacher_student(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), d), j), d, p, hidden,
                                      dtype=dtype, nested=True, redraw_above=redraw_above) for j in range(teachers)]
        setups.append((d, p, stack([t for t, _ in pairs]), stack([s for _, s in pairs])))
    ops = [jax.vmap(lambda t, s: order_parameters(s.weights(), t.weights()))(t, s) for _, _, t, s in setups]
    couplings = [jax.vmap(mode_coupling)(s) for _, _, _, s in setups]
    theory = jax.jit(jax.vmap(lambda op0, a: solve_ode(op0, a, eta, ts)))(
        jax.tree.map(lambda *a: jnp.concatenate(a), *ops), jnp.concatenate(couplings))
    out = []
    for index, (d, p, teacher, student) in enumerate(setups):
        base = jax.random.fold_in(jax.random.PRNGKey(seed + 1), d)
        keys = jnp.stack([jax.random.split(jax.random.fold_in(base, j), seeds) for j in range(teachers)])
        test_keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, j), seeds) for j in range(teachers)])  # after the seeds
        steps = jnp.round(ts * d).astype(jnp.int32)

        def one(key, t, s, test_key):
            return simulate_sgd(key, t, s, eta, steps, n_test=n_test, test_key=test_key if fixed_test else None).eps_g

        simulate = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None, None, None))))
        rows = slice(index * teachers, (index + 1) * teachers)
        out.append(TheoryVsSimulation(p, np.asarray(theory.eps_g[rows]), np.asarray(simulate(_shard_seeds(keys), teacher, student, test_keys)),
                                      np.asarray(theory.M[rows, -1]), np.asarray(theory.num_steps[rows])))
    by_configuration = dict(zip(unique, out))
    return [by_configuration[int(d), float(alpha)] for d, alpha in configurations]


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


def plateau_share(ts: jax.Array, eps: jax.Array, *, slope: float = 0.2) -> float:
    """Share of log-time (over ``ts > 0``, log-spaced) in which the error is flat:
    ``|d ln eps / d ln t| < slope`` on each interval of the grid, weighted by its length in
    ``ln t``."""
    ts, eps = np.asarray(ts), np.asarray(eps)
    keep = ts > 0
    log_t, log_eps = np.log(ts[keep]), np.log(np.maximum(eps[keep], 1e-300))
    widths = np.diff(log_t)
    flat = np.abs(np.diff(log_eps) / widths) < slope
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
    ``ts[0]``, by Adam on ``log eta`` with gradients through :func:`solve_ode`.

    Returns:
      The fitted eta and the loss at every iteration.
    """
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
