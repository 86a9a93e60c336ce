"""Online-learning theory: integrals, the ODE against the SGD update and simulation, fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdl_jax import online


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _random_covariance(seed, n):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(n, n)) / np.sqrt(n)
    return root @ root.T + 0.3 * np.eye(n)


def _monte_carlo(cov, fn, n=2_000_000, seed=0):
    u = np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n)
    values = np.asarray(fn(jnp.asarray(u.T)))
    return values.mean(), values.std() / np.sqrt(n)


@pytest.mark.parametrize("seed", [0, 1])
def test_integrals_match_monte_carlo(seed):
    c = _random_covariance(seed, 4)
    g, gp = online.g, online.g_prime
    cases = [
        (online.i2(c[0, 0], c[0, 1], c[1, 1]), lambda u: g(u[0]) * g(u[1])),
        (online.i3(c[0, 0], c[0, 1], c[0, 2], c[1, 2], c[2, 2]), lambda u: gp(u[0]) * u[1] * g(u[2])),
        (online.i3(c[0, 0], c[0, 0], c[0, 2], c[0, 2], c[2, 2]), lambda u: gp(u[0]) * u[0] * g(u[2])),
        (
            online.i4(c[0, 0], c[0, 1], c[0, 2], c[0, 3], c[1, 1], c[1, 2], c[1, 3], c[2, 2], c[2, 3], c[3, 3]),
            lambda u: gp(u[0]) * gp(u[1]) * g(u[2]) * g(u[3]),
        ),
        (  # repeated indices (i = j, c = e), as in the diagonal of E[delta delta]
            online.i4(c[0, 0], c[0, 0], c[0, 2], c[0, 2], c[0, 0], c[0, 2], c[0, 2], c[2, 2], c[2, 2], c[2, 2]),
            lambda u: gp(u[0]) ** 2 * g(u[2]) ** 2,
        ),
    ]
    for closed, integrand in cases:
        mean, stderr = _monte_carlo(c, integrand)
        assert abs(float(closed) - mean) < 5 * stderr + 1e-6, (float(closed), mean, stderr)


def test_generalisation_error_vanishes_for_the_teacher_and_matches_monte_carlo():
    teacher, student = online.init_teacher_student(jax.random.PRNGKey(0), 200, 5, 4, dtype=jnp.float64)
    w = teacher.weights()
    same = online.order_parameters(w, w)
    assert abs(float(online.generalisation_error(same))) < 1e-14
    op = online.order_parameters(student.weights(), w)
    x = jax.random.normal(jax.random.PRNGKey(1), (400_000, 200), jnp.float64)
    diff = online.g(x @ student.weights().T / np.sqrt(200)).mean(1) - online.g(x @ w.T / np.sqrt(200)).mean(1)
    mc = 0.5 * diff**2
    assert abs(float(online.generalisation_error(op)) - float(mc.mean())) < 4 * float(mc.std()) / np.sqrt(len(mc))


def test_ode_is_the_mean_one_sample_update():
    """d * E[Q' - Q] and d * E[M' - M] over one SGD sample equal the vector field.

    dM is linear in x, so it matches at any d; dQ's eta^2 term carries |x|^2 / d, whose
    correlation with delta adds an O((m + k) / d) correction, allowed for below.
    """
    d, p, k, eta = 400, 3, 3, 2.0
    teacher, student = online.init_teacher_student(jax.random.PRNGKey(2), d, p, k, dtype=jnp.float64)
    w_star, w = teacher.weights(), student.weights()
    op = online.order_parameters(w, w_star)
    a = online.mode_coupling(student)
    dq, dm = online.vector_field(0.0, (op.Q, op.M), online.OdeArgs(op.P, a, jnp.asarray(eta)))

    def update(x):
        lam, lam_star = w @ x / np.sqrt(d), w_star @ x / np.sqrt(d)
        delta = (online.g(lam).mean() - online.g(lam_star).mean()) * online.g_prime(lam) / k
        w_new = w - eta / np.sqrt(d) * jnp.outer(a @ delta, x)
        new = online.order_parameters(w_new, w_star)
        return d * (new.Q - op.Q), d * (new.M - op.M)

    x = jax.random.normal(jax.random.PRNGKey(3), (200_000, d), jnp.float64)
    sample_dq, sample_dm = jax.lax.map(update, x, batch_size=10_000)
    for sampled, field, bias in ((sample_dm, dm, 0.0), (sample_dq, dq, 3 * (2 * k) / d)):
        mean, stderr = sampled.mean(0), sampled.std(0) / np.sqrt(len(x))
        eta2_scale = float(jnp.abs(field).max())
        assert jnp.all(jnp.abs(mean - field) < 5 * stderr + bias * eta2_scale + 1e-9)


def test_assembled_jacobian_is_the_forward_mode_jacobian():
    """``vector_field_jacobian`` (the solver's default) against ``jax.jacfwd`` of the flattened
    field, with m != k and a learning-rate schedule read in both of its bins."""
    from jax.flatten_util import ravel_pytree

    m, k, d = 3, 5, 40
    w, w_star = (jax.random.normal(jax.random.PRNGKey(s), (n, d), jnp.float64) for s, n in ((11, m), (12, k)))
    op = online.order_parameters(w, w_star)
    a = 0.5 * jnp.eye(m) + 0.1
    args = online.OdeArgs(op.P, a, jnp.asarray([1.0, 3.0]), jnp.asarray([0.0, 1.0, 10.0]))
    flat, unravel = ravel_pytree((op.Q, op.M))

    @jax.jit
    def both(t):
        forward = jax.jacfwd(lambda y: ravel_pytree(online.vector_field(t, unravel(y), args))[0])(flat)
        return forward, online.vector_field_jacobian(t, (op.Q, op.M), args)

    for t in (0.5, 2.0):
        forward, assembled = both(t)
        assert assembled.shape == (m * m + m * k, m * m + m * k)
        np.testing.assert_allclose(assembled, forward, rtol=1e-12, atol=1e-14 * float(jnp.abs(forward).max()))


def _setup(d=100, alpha=1.0, k=8, seed=0):
    p = online.modes_for_load(alpha, d)
    teacher, student = online.init_teacher_student(jax.random.PRNGKey(seed), d, p, k, dtype=jnp.float64)
    op0 = online.order_parameters(student.weights(), teacher.weights())
    return teacher, student, op0, online.mode_coupling(student)


def test_adaptive_solve_matches_fine_euler():
    _, _, op0, a = _setup(d=100)
    ts = online.log_times(8.0, 10)
    adaptive = online.solve_ode(op0, a, 5.0, ts, rtol=1e-8, atol=1e-11, solver="tsit5")
    fine = online.solve_ode(op0, a, 5.0, ts, method="euler", d=2000, max_steps=20_000)
    coarse = online.solve_ode(op0, a, 5.0, ts, method="euler", d=500, max_steps=20_000)
    err_fine = float(jnp.max(jnp.abs(fine.eps_g - adaptive.eps_g) / adaptive.eps_g))
    err_coarse = float(jnp.max(jnp.abs(coarse.eps_g - adaptive.eps_g) / adaptive.eps_g))
    assert err_fine < 1e-3
    assert err_fine < 0.4 * err_coarse  # Euler converges at first order towards the adaptive solution
    assert int(adaptive.num_steps) < 1000
    for solver in ("bosh3", "kvaerno5", "rosenbrock23"):  # the other schemes of the benchmark's table (the default too)
        other = online.solve_ode(op0, a, 5.0, ts, rtol=1e-8, atol=1e-11, solver=solver)
        np.testing.assert_allclose(other.eps_g, adaptive.eps_g, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        online.solve_ode(op0, a, 5.0, ts, solver="rk4")


@pytest.mark.parametrize("jacobian_every", [1, 10])
def test_rosenbrock_solves_a_stiff_system_at_second_order(jacobian_every):
    """y' = -A (y - c) + small nonlinearity, eigenvalues 1 and 1000: explicit schemes would need
    h < 2e-3; the Rosenbrock-W pair takes large steps with a stale Jacobian and converges at
    second order in the step."""
    import diffrax

    a = jnp.asarray([[500.5, 499.5], [499.5, 500.5]])  # eigenvalues 1000 and 1
    field = lambda t, y, args: -a @ (y - 1.0) + 0.01 * jnp.sin(y)

    def solve(controller, dt0=None):
        return diffrax.diffeqsolve(diffrax.ODETerm(field), online.Rosenbrock23(jacobian_every=jacobian_every), t0=0.0, t1=5.0,
                                   dt0=dt0, y0=jnp.asarray([3.0, -1.0]), stepsize_controller=controller, max_steps=10_000)

    reference = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Kvaerno5(), t0=0.0, t1=5.0, dt0=1e-4, y0=jnp.asarray([3.0, -1.0]),
                                    stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14), max_steps=100_000).ys[-1]
    adaptive = solve(diffrax.PIDController(rtol=1e-6, atol=1e-9), dt0=1e-3)
    np.testing.assert_allclose(adaptive.ys[-1], reference, rtol=1e-5)
    assert int(adaptive.stats["num_steps"]) < 500  # an explicit scheme needs 2,500 for stability alone
    errors = [float(jnp.abs(solve(diffrax.ConstantStepSize(), dt0=h).ys[-1] - reference).max()) for h in (0.1, 0.05)]
    assert 3.0 < errors[0] / errors[1] < 5.0  # second order


def test_theory_matches_simulation_at_moderate_d():
    teacher, student, op0, a = _setup(d=100)
    ts = online.log_times(300.0, 15, t_min=1.0)
    theory = online.solve_ode(op0, a, 5.0, ts)
    steps = jnp.round(ts * 100).astype(jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    sim = jax.jit(jax.vmap(lambda key: online.simulate_sgd(key, teacher, student, 5.0, steps, n_test=4000)))(keys)
    gap = jnp.abs(sim.eps_g.mean(0) - theory.eps_g) / theory.eps_g
    assert float(gap.max()) < 0.1
    assert float(theory.eps_g[-1]) < 0.1 * float(theory.eps_g[0])  # it learned


def test_chunked_sgd_is_one_sample_at_a_time_sgd_and_runs_share_inputs():
    """The chunked update (Gram matrix of each chunk) against plain SGD, one sample at a time, on
    the same input stream; saves that cut blocks and chunks; runs side by side against alone."""
    d, k, block, chunk = 20, 4, 64, 16
    teacher, student = online.init_teacher_student(jax.random.PRNGKey(5), d, 3, k, dtype=jnp.float64)
    key, steps = jax.random.PRNGKey(6), jnp.asarray([0, 37, 300], jnp.int32)
    sim = online.simulate_sgd(key, teacher, student, 5.0, steps, n_test=50, block=block, chunk=chunk)
    xi, sigma, w_star = np.asarray(student.xi), np.asarray(student.sigma), np.asarray(teacher.weights())
    xi_hat, k_train = np.asarray(student.xi_hat).copy(), jax.random.split(key)[0]
    for nu in range(300):
        x = np.asarray(jax.random.normal(jax.random.fold_in(k_train, nu // block), (block, d), jnp.float64))[nu % block]
        lam = (xi * sigma) @ (xi_hat.T @ x) / np.sqrt(d)
        error = np.mean(online.g(lam)) - np.mean(online.g(w_star @ x / np.sqrt(d)))
        delta = error * np.asarray(online.g_prime(lam)) / k
        xi_hat -= 5.0 / np.sqrt(d) * np.outer(x, sigma * (xi.T @ delta))
    np.testing.assert_allclose(sim.xi_hat, xi_hat, atol=1e-12)
    pairs = [online.init_teacher_student(jax.random.PRNGKey(j), d, p, k, dtype=jnp.float64) for j, p in ((1, 2), (2, 2), (3, 5))]
    stack = lambda items: jax.tree.map(lambda *a: jnp.stack(a), *items)
    groups = [(stack([t for t, _ in pairs[:2]]), stack([s for _, s in pairs[:2]])), jax.tree.map(lambda a: a[None], pairs[2])]
    together = online.simulate_runs(key, groups, 5.0, steps, n_test=50, block=block, chunk=chunk, test_key=key)
    alone = [online.simulate_sgd(key, t, s, 5.0, steps, n_test=50, block=block, chunk=chunk, test_key=key) for t, s in pairs]
    assert [g.eps_g.shape for g in together] == [(2, 3), (1, 3)] and together[1].xi_hat.shape == (1, d, 5)
    for (group, run), one in zip([(0, 0), (0, 1), (1, 0)], alone):
        np.testing.assert_allclose(together[group].xi_hat[run], one.xi_hat, atol=1e-12)
        np.testing.assert_allclose(together[group].eps_g[run], one.eps_g, rtol=1e-10)
    with pytest.raises(ValueError, match="chunk = 24 must divide block = 64"):
        online.simulate_sgd(key, teacher, student, 5.0, steps, block=block, chunk=24)


def test_gradient_through_the_solve_matches_finite_differences():
    _, _, op0, a = _setup(d=50, alpha=2.0, k=4)
    ts = online.log_times(40.0, 8)

    def loss(eta):
        return jnp.log(online.solve_ode(op0, a, eta, ts, rtol=1e-10, atol=1e-13, solver="tsit5").eps_g[-1])

    grad = float(jax.grad(loss)(4.0))
    h = 1e-4
    fd = (float(loss(4.0 + h)) - float(loss(4.0 - h))) / (2 * h)
    assert abs(grad - fd) < 1e-4 * max(1.0, abs(fd))
    assert abs(fd) > 1e-3  # the check is not vacuous


def test_fitting_recovers_a_known_learning_rate(calibration_curves):
    """fit_learning_rate (Adam on log eta through the solve) on one teacher's seed-mean curve."""
    ts, eps, teachers, students = calibration_curves
    with jax.enable_x64(True):
        student = jax.tree.map(lambda a: a[0], students)
        op0 = online.order_parameters(student.weights(), jax.tree.map(lambda a: a[0], teachers).weights())
        eta, losses = online.fit_learning_rate(ts, eps[0].mean(0), op0, online.mode_coupling(student), eta_init=0.6, steps=60,
                                               learning_rate=0.05)
    assert abs(float(eta) - 1.0) < 0.05  # eta = 1 simulated; 8 seeds of noise
    assert float(losses[-1]) < 0.1 * float(losses[0])


@pytest.fixture(scope="module")
def calibration_curves():
    """Online SGD at d = 100 (m = k = 2, p = 4, eta = 1) for 20 teachers x 8 independent seeds."""
    with jax.enable_x64(True):
        d, ts = 100, online.log_times(30.0, 16, t_min=0.5)
        (_, teachers, students), = online.teacher_student_groups([(d, 4 / np.log(d) + 1e-9)], hidden=2, teachers=20, seed=7,
                                                                 dtype=jnp.float64).values()
        steps = jnp.round(ts * d).astype(jnp.int32)
        sim = jax.jit(lambda key: online.simulate_runs(key, [(teachers, students)], 1.0, steps, n_test=4000)[0].eps_g)
        eps = jnp.stack([sim(jax.random.PRNGKey(s)) for s in range(8)], 1)  # (teachers, seeds, T)
    return ts, eps, teachers, students


def test_fitted_inputs_are_calibrated_over_twenty_teachers(calibration_curves):
    """Fitting eta and the initial overlaps' scale to each teacher's 8 seeds: the true values
    (1 and 1) lie within 2 standard errors in at least 85 % of the 20 fits (threshold fixed
    before the first run), from a start 40 % and 20 % off."""
    ts, eps, teachers, students = calibration_curves
    inside = {"eta": [], "init_scale": []}
    for j in range(20):
        one = jax.tree.map(lambda a: a[j], (teachers, students))
        result = online.fit(ts, eps[j], *one, eta=0.6, init_scale=0.8, free=("eta", "init_scale"))
        assert result.converged and result.noise == "seeds" and result.names == ("eta", "init_scale")
        assert result.correlation.shape == (2, 2) and abs(result.correlation[0, 1]) <= 1 + 1e-9
        for name in inside:
            inside[name].append(abs(result.values[name] - 1.0) < 2 * result.stderr[name])
            assert result.stderr[name] < 0.1  # informative: the curves determine both
    for name, hits in inside.items():
        assert np.mean(hits) >= 0.85, (name, np.mean(hits))


def test_a_fit_the_curves_do_not_determine_reports_a_large_error(calibration_curves):
    """Times up to t = 1e-5, before learning moves eps_g: eta is not determined, and its
    standard error says so (a fit from 0.5 stays near 0.5, with an error larger than itself);
    a teacher's mode strengths are fitted (started at the truth: four strengths from one curve
    have other minima, a start 30 % off ended in one), and bad inputs are refused."""
    ts, eps, teachers, students = calibration_curves
    early = online.log_times(1e-5, len(ts), t_min=1e-6)  # as many times as ts: the fit compiled above is reused
    solve = jax.vmap(lambda t, s: online.solve_ode(online.order_parameters(s.weights(), t.weights()),
                                                    online.mode_coupling(s), 1.0, early).eps_g)
    curves = solve(teachers, students)[:2] * (1 + 1e-3 * jax.random.normal(jax.random.PRNGKey(0), (2, len(ts))))
    result = online.fit(early, curves[0], *jax.tree.map(lambda a: a[0], (teachers, students)), eta=0.5,
                        free=("eta", "init_scale"))
    assert result.noise == "residuals" and result.stderr["eta"] > result.values["eta"]  # relative error above 100 %
    one = jax.tree.map(lambda a: a[0], (teachers, students))
    result = online.fit(ts, eps[0], *one, eta=1.0, free=("sigma",))  # from the true strengths: they stay there
    assert result.values["sigma"].shape == (1, 4) and result.names == tuple(f"sigma[0,{a}]" for a in range(4))
    error = np.abs(result.values["sigma"][0] - np.asarray(one[0].sigma))
    assert np.all(error < 3 * result.stderr["sigma"][0]) and np.all(np.sign(result.values["sigma"]) == np.sign(one[0].sigma))
    two = jax.tree.map(lambda a: a[:2], (teachers, students))
    with pytest.raises(ValueError, match="free must name inputs to fit among eta, sigma, init_scale"):
        online.fit(ts, eps[0], *jax.tree.map(lambda a: a[0], (teachers, students)), eta=1.0, free=("lr",))
    with pytest.raises(ValueError, match=r"eps must be \(T,\), \(seeds, T\) or \(teachers, seeds, T\)"):
        online.fit(ts, eps[:3], *two, eta=1.0)


def test_modes_for_load():
    assert online.modes_for_load(1.0, 100) == 4
    with pytest.raises(ValueError, match="p = floor"):
        online.modes_for_load(0.1, 10)


def test_nested_teachers_share_their_first_modes_and_the_redraw_rule_applies():
    key = jax.random.PRNGKey(3)
    small = online.init_teacher_student(key, 50, 3, 4, dtype=jnp.float64, nested=True)
    large = online.init_teacher_student(key, 50, 6, 4, dtype=jnp.float64, nested=True)
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
        np.testing.assert_array_equal(a, b[..., :3])  # every factor's mode axis is last
    plain = online.init_teacher_student(key, 50, 3, 4, dtype=jnp.float64)
    assert plain[0].sigma.shape == (3,) and not np.allclose(plain[0].xi_hat, small[0].xi_hat)
    teacher, student = online.init_teacher_student(key, 50, 3, 4, dtype=jnp.float64, nested=True, redraw_above=0.0)
    np.testing.assert_array_equal(teacher.xi_hat, small[0].xi_hat)  # the teacher stays, the student is redrawn
    assert not np.allclose(student.xi_hat, small[1].xi_hat)
    kept = online.init_teacher_student(key, 50, 3, 4, dtype=jnp.float64, nested=True, redraw_above=1e9)
    np.testing.assert_array_equal(kept[1].xi_hat, small[1].xi_hat)


def test_fixed_test_set_is_shared_and_plateau_measures():
    teacher, student, _, _ = _setup(d=60)
    steps = jnp.asarray([0, 600, 1200], jnp.int32)
    run = lambda key, test_key=None: online.simulate_sgd(key, teacher, student, 5.0, steps, n_test=500, test_key=test_key).eps_g
    fixed = jax.random.PRNGKey(9)
    a, b = run(jax.random.PRNGKey(1), fixed), run(jax.random.PRNGKey(2), fixed)
    assert float(a[0]) == float(b[0])  # same initial student, same fixed test set
    assert float(run(jax.random.PRNGKey(1))[0]) != float(run(jax.random.PRNGKey(2))[0])  # fresh samples differ
    ts = np.asarray([0.0, 1.0, 10.0, 100.0, 1000.0, 1e4])
    plateau = np.asarray([1.0, 0.5, 0.1, 0.1, 0.1, 1e-3])  # learns from t < 1, flat for two of the four decades after
    assert online.plateaus(ts, plateau) == (1.0, pytest.approx(0.5), pytest.approx(2.0))
    late = np.asarray([1.0, 1.0, 1.0, 1.0, 0.1, 1e-3])  # nothing happens for two decades, then learns without a pause
    assert online.plateaus(ts, late) == (1000.0, 0.0, 0.0)  # the wait before the onset is no plateau
    assert online.plateau_share(ts, late, onset_fraction=1.0) == pytest.approx(0.5)  # counted from t > 0, it would be
    stats = online.plateau_statistics(ts, np.stack([plateau, late]))
    assert stats["teachers"] == 2 and stats["no_plateau_fraction"] == 0.5 and stats["share_max"] == pytest.approx(0.5)
    learned = np.asarray([1.0, 1.0, 1e-9, 1.1e-9, 1e-9])  # learned by t = 10, then flat at a floor
    assert online.plateau_share(ts[:5], learned) == 0.0 and online.plateau_share(ts[:5], learned, floor=0.0) == pytest.approx(2 / 3)
    assert online.time_to_fraction(ts, late) == 1e4 and online.time_to_fraction(ts, late, fraction=1e-4) is None


def test_float32_simulation_follows_the_float64_one_from_the_same_students():
    """``simulation_dtype``: SGD in float32 from the float64 teachers and students draws its own
    inputs, so it agrees with the float64 SGD within the seeds' noise (threshold fixed
    beforehand: every seed mean within 4 standard errors of the difference)."""
    ts = online.log_times(30.0, 8)
    run = lambda dtype: online.theory_vs_simulation([(50, 1.0)], ts, hidden=4, eta=5.0, seeds=8, n_test=2000, teachers=2,
                                                    fixed_test=True, simulation_dtype=dtype)[0]
    single, double = run(jnp.float32), run(None)
    assert single.eps_sim.dtype == np.float64 and single.eps_sim.shape == double.eps_sim.shape == (2, 8, 8)
    np.testing.assert_array_equal(single.eps_ode, double.eps_ode)  # the ODE stays in float64
    error = np.sqrt((single.eps_sim.var(1, ddof=1) + double.eps_sim.var(1, ddof=1)) / 8)[:, 1:]  # t = 0: no spread
    z = np.abs(single.eps_sim.mean(1) - double.eps_sim.mean(1))[:, 1:] / error
    assert float(z.max()) < 4.0, z


SHARDED_SIMULATION = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
import numpy as np
from mdl_jax import online
from mdl_jax.online import compare
ts = online.log_times(20.0, 6)
def no_ode(setups, *args):  # the simulation is what is sharded: the ODE beside it is replaced by zeros of its shapes
    n = sum(len(teachers.sigma) for _, teachers, _ in setups.values())
    return online.OdeSolution(ts, None, np.zeros((n, len(ts), 1, 1)), np.zeros((n, len(ts))), np.zeros(n, np.int32))
setups = compare.teacher_student_groups([(40, 1.0)], hidden=2, teachers=3, seed=3)
(_, teachers, students), = setups.values()
ops = jax.vmap(lambda t, s: online.order_parameters(s.weights(), t.weights()))(teachers, students)
couplings = jax.vmap(online.mode_coupling)(students)
each = online.solve_each(ops, couplings, 5.0, ts)  # three members over two devices, each fed by its own thread
turn = lambda a: np.roll(np.asarray(a), -1, axis=0)  # members 1, 2, 0: members 1 and 2 change devices
turned = online.solve_each(jax.tree.map(turn, ops), turn(couplings), 5.0, ts)
order_diff = float(np.max(np.abs(np.roll(np.asarray(turned.eps_g), 1, axis=0) - np.asarray(each.eps_g))))
members_differ = min(float(np.max(np.abs(each.eps_g[i] - each.eps_g[j]))) for i, j in ((0, 1), (0, 2), (1, 2)))
try:
    online.solve_each(jax.tree.map(lambda a: a[:1], ops), couplings[:1], 5.0, ts, max_steps=3)  # one member: one compile
    failed = ""
except Exception as error:  # raised in a device's thread, re-raised here
    failed = str(error)
compare._theory = no_ode
run = lambda common: np.stack([c.eps_sim for c in online.theory_vs_simulation(
    [(40, 1.0), (40, 2.0)], ts, hidden=4, eta=5.0, seeds=4, n_test=500, teachers=2, common_inputs=common)])
sharded = [run(True), run(False)]
spread = len(compare._shard_seeds(jax.numpy.zeros((4, 2), jax.numpy.uint32)).sharding.device_set)
compare._shard_seeds = lambda keys, axis=0: keys
alone = [run(True), run(False)]
print(json.dumps({"devices": spread, "order_diff": order_diff, "members_differ": members_differ, "failed": failed,
                  "max_rel_diff": max(float(np.max(np.abs(a - b) / np.abs(b))) for a, b in zip(sharded, alone)),
                  "shapes": [a.shape for a in alone], "modes_differ": bool(np.all(alone[0][0] != alone[0][1])),
                  "common_differs": bool(np.all(alone[0][:, :, :, 1:] != alone[1][:, :, :, 1:]))}))
"""


def test_simulation_sharded_over_cpu_devices_matches_one_device():
    """Two CPU devices (a subprocess: the device count is fixed at start-up) share the seeds, with
    inputs common to every teacher and mode load at one d and with a stream per teacher; and
    ``solve_each``'s ODE solves (a thread per device) come back in the members' order whichever
    device solved them, and a failed one raises."""
    import json, os, subprocess, sys

    result = subprocess.run([sys.executable, "-c", SHARDED_SIMULATION], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["max_rel_diff"] < 1e-9
    assert out["shapes"] == [[2, 2, 4, 6]] * 2 and out["modes_differ"] and out["common_differs"]
    assert out["order_diff"] == 0 and out["members_differ"] > 1e-3  # each member's solve, in the members' order, on either device
    assert "maximum number of solver steps was reached" in out["failed"]


def test_a_designed_schedule_beats_the_best_constant_rate_in_theory_and_in_simulation():
    """Two teachers at d = 100 (p = 4, m = k = 2), horizon t = 30, 5 bins: the schedule designed
    through the ODE ends below the best constant rate found the same way, and simulated SGD
    (6 seeds each, the same inputs for both) agrees: lower eps_g at the horizon, by the ratio
    the ODE predicts within 5 points."""
    d = 100
    (_, teachers, students), = online.teacher_student_groups([(d, 4 / np.log(d) + 1e-9)], hidden=2, teachers=2, seed=7,
                                                             dtype=jnp.float64).values()
    ops = jax.vmap(lambda t, s: online.order_parameters(s.weights(), t.weights()))(teachers, students)
    edges = online.schedule_edges(30.0, 5)
    from mdl_jax.online.design import _objective as objectives

    objectives.cache_clear()  # count this test's programs alone
    result = online.design(ops, jax.vmap(online.mode_coupling)(students), edges, eta_init=1.0, steps=20, learning_rate=0.1)
    assert result.eps_designed < result.eps_constant and result.history.shape == (20, 2)
    assert np.all((result.eta >= 1e-2) & (result.eta <= 50.0)) and np.ptp(result.eta) > 0.5  # not a constant in disguise
    steps = jnp.round(jnp.asarray(edges) * d).astype(jnp.int32)
    sim = jax.jit(lambda key, eta: online.simulate_runs(key, [(teachers, students)], eta, steps, n_test=4000)[0].eps_g[:, -1])
    final = {}
    for name, eta in (("designed", jnp.asarray(online.rates_per_save(edges, result.eta, edges))),
                      ("constant", jnp.full(len(edges), result.eta_constant))):
        final[name] = np.exp(np.mean(np.log(np.stack([sim(jax.random.PRNGKey(s), eta) for s in range(6)]))))
    simulated, predicted = final["designed"] / final["constant"], result.eps_designed / result.eps_constant
    assert simulated < 1 and abs(simulated - predicted) < 0.05
    np.testing.assert_array_equal(online.rates_per_save(edges, result.eta, edges), np.concatenate([result.eta[:1], result.eta]))
    with pytest.raises(ValueError, match="every bin edge must be a save time"):
        online.rates_per_save(edges, result.eta, np.linspace(0, 30, 7))
    with pytest.raises(ValueError, match="one rate per bin: 5 for 6 edges"):
        online.rates_per_save(edges, result.eta[:3], edges)
    more = online.design(ops, jax.vmap(online.mode_coupling)(students), edges, eta_init=1.0, steps=1, learning_rate=0.1,
                         start=result)  # a design continued from another: its history first
    assert more.history.shape == (21, 2) and np.array_equal(more.history[:20], result.history)
    assert more.eps_designed <= result.eps_designed * 1.01
    online.gradient_check(ops, jax.vmap(online.mode_coupling)(students), edges, result.eta)  # its agreement: test_schedule_tiny
    assert objectives.cache_info().currsize == 1  # the designs and their gradient check: one program, compiled once
    assert objectives("tsit5", 1e-6, 1e-9, 4096, True)._cache_size() == 1
    with pytest.raises(ValueError, match="start is a design for other edges"):
        online.design(ops, jax.vmap(online.mode_coupling)(students), edges[:-1], eta_init=1.0, steps=1, start=result)
    with pytest.raises(ValueError, match="a schedule eta"):
        online.solve_ode(jax.tree.map(lambda a: a[0], ops), online.mode_coupling(jax.tree.map(lambda a: a[0], students)),
                         jnp.ones(3), edges)
