"""Effective Ising model: BP, inverse Ising, Metropolis, the entropy landscape."""

import warnings
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdl_jax
from mdl_jax import landscape as ls


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_bp_is_exact_on_a_tree():
    model = ls.tree_ising(jax.random.PRNGKey(0), 10, coupling=0.8, field=0.4)
    bp = ls.belief_propagation(model, tol=1e-13, max_sweeps=200)
    m, pair, log_z = ls.exact_moments(model)
    np.testing.assert_allclose(bp.magnetisation, m, atol=1e-10)
    edges = np.asarray(model.J) != 0
    np.testing.assert_allclose(np.asarray(bp.pair_moment)[edges], np.asarray(pair)[edges], atol=1e-10)
    np.testing.assert_allclose(ls.bethe_free_entropy(model, bp), log_z, atol=1e-10)


def test_bp_is_close_on_a_small_weakly_coupled_dense_graph():
    model = ls.random_ising(jax.random.PRNGKey(1), 12, coupling=0.02, field=0.3)
    bp = ls.belief_propagation(model, tol=1e-12)
    m, pair, log_z = ls.exact_moments(model)
    assert int(bp.sweeps) < 100
    # BP pair moments miss indirect correlations (sum_k J_ik J_kj, order sqrt(N) J^2)
    np.testing.assert_allclose(bp.magnetisation, m, atol=3e-3)
    np.testing.assert_allclose(bp.pair_moment, pair, atol=5e-3)  # measured 3.5e-3 at worst
    np.testing.assert_allclose(ls.bethe_free_entropy(model, bp), log_z, atol=3e-3)
    exact_entropy = log_z - 0.5 * jnp.sum(model.J * pair) - model.h @ m
    np.testing.assert_allclose(ls.bethe_entropy(model, bp), exact_entropy, atol=3e-3)


def _exact_samples(model, n, seed=0):
    size = model.h.shape[0]
    states = 1 - 2 * ((np.arange(2**size)[:, None] >> np.arange(size)) & 1)
    log_w = 0.5 * np.einsum("si,ij,sj->s", states, np.asarray(model.J), states) + states @ np.asarray(model.h)
    p = np.exp(log_w - log_w.max())
    index = np.random.default_rng(seed).choice(len(p), size=n, p=p / p.sum())
    return jnp.asarray(states[index], jnp.float64)


def test_inverse_ising_recovers_a_known_model():
    """Weak couplings, as in the trained networks: BP moments are then nearly exact, and the
    fitted moments match the data's to rounding; what remains of the error in J is BP's loop
    bias and sampling noise (measured 0.012; pseudo-likelihood, which has no BP bias, 0.008)."""
    truth = ls.random_ising(jax.random.PRNGKey(2), 8, coupling=0.05, field=0.3)
    samples = _exact_samples(truth, 200_000)
    fit = ls.boltzmann_learning(samples, iterations=400, lr_couplings=0.5, lr_fields=0.5, l2=0.0, tol=1e-10)
    off = ~np.eye(8, dtype=bool)
    assert np.max(np.abs(np.asarray(fit.model.J - truth.J)[off])) < 0.02
    assert np.max(np.abs(np.asarray(fit.model.h - truth.h))) < 0.015
    assert float(fit.rms_error) < 1e-8 < float(fit.history[0])
    from_zero = ls.boltzmann_learning(samples, iterations=400, lr_couplings=0.5, lr_fields=0.5, l2=0.0, tol=1e-10, start="zero")
    np.testing.assert_allclose(from_zero.model.J, fit.model.J, atol=1e-6)  # weakly coupled: one fixed point
    with pytest.raises(ValueError, match="start='mean'"):
        ls.boltzmann_learning(samples, start="mean")
    authors = ls.boltzmann_learning(samples, iterations=400, lr_couplings=0.5, lr_fields=0.5, l2=0.0, tol=1e-10, damping=0.0,
                                    criterion="mean", restart=jax.random.PRNGKey(3), burn_in=51, start="zero")
    np.testing.assert_allclose(authors.model.J, fit.model.J, atol=1e-6)  # fresh BP messages reach the same fixed point
    unstable = ls.boltzmann_learning(samples, iterations=60, lr_couplings=3.0, lr_fields=3.0, burn_in=30, restart=jax.random.PRNGKey(3))
    eligible = np.asarray(unstable.history)[30:]  # rates this large overshoot: the best of all is the start
    assert float(unstable.rms_error) == eligible.min() > float(unstable.history[0])
    with pytest.raises(ValueError, match="burn_in=60"):
        ls.boltzmann_learning(samples, iterations=60, burn_in=60)
    with pytest.raises(ValueError, match="criterion='median'"):
        ls.belief_propagation(truth, criterion="median")
    pl = ls.pseudo_likelihood(samples, l2=0.0, steps=600)
    assert np.max(np.abs(np.asarray(pl.J - truth.J)[off])) < 0.015
    assert np.max(np.abs(np.asarray(pl.h - truth.h))) < 0.015


def test_metropolis_reproduces_the_model_moments():
    model = ls.random_ising(jax.random.PRNGKey(3), 10, coupling=0.3, field=0.4)
    samples = ls.metropolis(model, jax.random.PRNGKey(4), chains=32, sweeps=1200, burn_in=200)
    mean, second = ls.sample_moments(samples)
    m, pair, _ = ls.exact_moments(model)
    np.testing.assert_allclose(mean, m, atol=0.02)
    np.testing.assert_allclose(second, pair, atol=0.03)


def test_landscape_of_independent_spins_is_the_closed_form():
    n = 30
    reference = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, (n,)), 1.0, -1.0)
    fields = ls.field_sweep(3.0, 0.25)
    free = ls.entropy_landscape(ls.Ising(jnp.zeros((n, n)), jnp.zeros(n)), reference, fields)
    np.testing.assert_allclose(free.entropy, ls.entropy_bound(free.distance), atol=1e-10)
    np.testing.assert_allclose(free.overlap, jnp.tanh(fields), atol=1e-10)
    h = 0.5 * jax.random.normal(jax.random.PRNGKey(6), (n,))
    biased = ls.entropy_landscape(ls.Ising(jnp.zeros((n, n)), h), reference, fields)
    m = jnp.tanh(h[None] + fields[:, None] * reference[None])
    p = (1 + m) / 2
    closed = -jnp.mean(p * jnp.log(p) + (1 - p) * jnp.log(1 - p), axis=1)
    np.testing.assert_allclose(biased.entropy, closed, atol=1e-10)
    assert float(ls.hysteresis(free)) < 1e-10


def test_entropy_never_exceeds_the_bound():
    model = ls.random_ising(jax.random.PRNGKey(7), 40, coupling=0.08, field=0.2)
    reference = jnp.sign(ls.metropolis(model, jax.random.PRNGKey(8), chains=1, sweeps=50, burn_in=49)[0])
    landscape = ls.entropy_landscape(model, reference, ls.field_sweep(3.0, 0.1))
    assert bool(jnp.all(landscape.converged))
    assert bool(jnp.all(landscape.entropy <= ls.entropy_bound(landscape.distance) + 1e-9))


@pytest.mark.parametrize("beta, broken", [(1.6, True), (0.5, False)])
def test_jumps_and_hysteresis_of_a_curie_weiss_magnet(beta, broken):
    """Below its critical temperature (beta > 1) a fully connected ferromagnet flips
    discontinuously in a field, at different fields going down and up; above it, smoothly.
    Metropolis chains carried along the same sweep see the same."""
    n = 60
    model = ls.Ising(beta / n * (jnp.ones((n, n)) - jnp.eye(n)), jnp.zeros(n))
    landscape = ls.entropy_landscape(model, jnp.ones(n), ls.field_sweep(1.0, 0.02), tol=1e-10, max_sweeps=5000)
    jumps, loop = ls.distance_jumps(landscape), ls.hysteresis(landscape)
    simulated = ls.metropolis_landscape(model, jnp.ones(n), landscape.fields, jax.random.PRNGKey(9), chains=16, sweeps=20)
    if broken:
        assert float(jumps.min()) > 0.3 and float(loop) > 0.3
        # the chains flip over a few field steps (measured jumps 0.22-0.25) but show the same loop (0.88)
        assert float(ls.distance_jumps(simulated).min()) > 0.15 and float(ls.hysteresis(simulated)) > 0.5
    else:
        assert float(jumps.max()) < 0.05 and float(loop) < 1e-6
        np.testing.assert_allclose(simulated.distance, landscape.distance, atol=0.03)  # measured 0.011
        assert float(ls.hysteresis(simulated)) < 0.05
    with pytest.raises(ValueError, match="measure=30"):
        ls.metropolis_landscape(model, jnp.ones(n), landscape.fields, jax.random.PRNGKey(9), sweeps=20, measure=30)
    # the authors' procedure: undamped BP, fresh N(0, 0.01) messages at the start of each direction
    fresh = ls.entropy_landscape(model, jnp.ones(n), landscape.fields, tol=1e-10, max_sweeps=5000, damping=0.0,
                                 restart=jax.random.PRNGKey(10))
    chex.assert_shape(fresh.distance, landscape.distance.shape)
    if broken:  # each direction starts in the state its first field favours: the same loop
        assert float(ls.hysteresis(fresh)) > 0.3
        assert float(ls.distance_after_jump(fresh)) > 0.8  # the down sweep jumps to the reversed state
    else:  # one fixed point: the start does not matter
        np.testing.assert_allclose(fresh.distance, landscape.distance, atol=1e-8)
        assert 0.4 < float(ls.distance_after_jump(fresh)) < 0.6  # the steepest step is where d crosses 1/2, at x = 0


def test_reversed_state_fraction_tells_couplings_from_fields():
    """Chains from random starts: a ferromagnet without fields falls into either state about
    equally often; independent spins polarised by their fields never reverse."""
    n = 40
    magnet = ls.Ising(1.6 / n * (jnp.ones((n, n)) - jnp.eye(n)), jnp.zeros(n))
    aligned = jnp.ones((50, n)).at[:, :5].set(-1.0)  # data in the + state
    fraction = float(ls.reversed_state_fraction(magnet, aligned, jax.random.PRNGKey(11), chains=128, sweeps=50))
    assert 0.3 < fraction < 0.7
    polarised = ls.Ising(jnp.zeros((n, n)), jnp.ones(n))
    assert float(ls.reversed_state_fraction(polarised, aligned, jax.random.PRNGKey(12), chains=128, sweeps=50)) == 0.0


@pytest.mark.mnist
def test_binary_networks_train_through_the_trainer_on_pca20_mnist(mnist):
    """The ``binary`` method trains like any other (one program for a second sweep of the same
    shapes, other seeds other networks), beats chance, and its sampled configurations score
    what their stored accuracy says."""
    from mdl_jax import _train, binary

    with jax.enable_x64(False):
        pca = binary.pca_project(mnist._replace(train_images=mnist.train_images[:20_000], train_labels=mnist.train_labels[:20_000]))
        covariance = np.cov(pca.train_images.T)
        assert np.allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-2 * covariance.max())
        assert np.all(np.diff(np.diag(covariance)) <= 1e-6)  # components by decreasing variance
        traced = chex.assert_max_traces(_train._train_epoch_shared_order, n=1)
        with mock.patch.object(_train, "_train_epoch_shared_order", traced):
            trained = []
            for seeds in ([0, 1], [5, 6]):
                sweep = mdl_jax.build_sweep((20, 15, 15, 10), "binary", seeds=seeds, learning_rates=[0.3],
                                            batch_size=200, weight_decay=0.0, lr_halving_epochs=3)
                trained.append(mdl_jax.train(sweep.recipe, sweep.runs, pca, epochs=3))
        logits, again = trained[0].state.params["logits"], trained[1].state.params["logits"]
        assert float(trained[0].metrics.test_accuracy[-1].min()) > 0.5  # chance: 0.1
        assert not np.allclose(logits[0], again[0])  # other seeds, other networks
        scoring = pca._replace(test_images=pca.test_images[:2000], test_labels=pca.test_labels[:2000])
        samples, accuracy = binary.weight_samples(logits, scoring, per_network=200, threshold=0.5, key=jax.random.PRNGKey(0))
        with pytest.raises(ValueError, match="0 samples reach accuracy 1.01"):
            binary.weight_samples(logits, scoring, per_network=2, threshold=1.01, key=jax.random.PRNGKey(0))
    assert samples.shape[1] == 20 * 15 + 15 * 15 + 15 * 10 and set(np.unique(samples)) <= {-1, 1}
    assert len(samples) == len(accuracy) and np.all(accuracy >= 0.5)
    first = [jnp.asarray(w[0], jnp.float32) for w in binary.split_layers(samples[:1], (20, 15, 15, 10))]
    direct = np.mean(np.argmax(binary.binary_logits(first, jnp.asarray(scoring.test_images)), -1) == scoring.test_labels)
    np.testing.assert_allclose(direct, accuracy[0], atol=1e-6)


def test_binary_training_loss_is_sampled_and_evaluation_is_the_sign_configuration():
    """A stochastic method's apply gets the step's key in training (two keys, two outputs) and
    none in evaluation (``w = sign(theta)``)."""
    spec = mdl_jax.make_spec((6, 5, 3), None, "binary")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
    a, b = (mdl_jax.apply(params, x, spec=spec, key=jax.random.PRNGKey(k)) for k in (2, 3))
    assert not np.allclose(a, b)
    signs = [jnp.where(t >= 0, 1.0, -1.0) for t in params["logits"]]
    np.testing.assert_allclose(mdl_jax.apply(params, x, spec=spec), binary_logits_ref(signs, x), rtol=1e-6)
    assert mdl_jax.param_count(spec) == 6 * 5 + 5 * 3
    binary = mdl_jax.get_method("binary")  # a stochastic method without its own apply could not take the key
    with pytest.raises(mdl_jax.SpecError, match="stochastic: it needs its own apply"):
        mdl_jax.register_method(binary._replace(name="keyless", apply=None))
    assert "keyless" not in mdl_jax.METHODS


def binary_logits_ref(weights, x):
    """The hidden units of the effective-model notes, written out: leaky ReLU over sqrt(fan-in)."""
    h = x
    for l, w in enumerate(weights):
        z = h @ w
        h = (jnp.maximum(z, 0) + 0.1 * jnp.minimum(z, 0)) / np.sqrt(w.shape[0]) if l < len(weights) - 1 else z
    return h


def test_mcmc_boltzmann_learning_fits_clusters_that_bp_cannot():
    """Two groups of spins that flip together (each group all +1 or all -1, at random): the
    max-entropy model has strong intra-group couplings and near-zero fields. Learning with
    Metropolis moments reproduces the data; with BP moments (BP breaks each group's up-down
    symmetry) it cannot get close."""
    key = jax.random.PRNGKey(11)
    groups = jnp.where(jax.random.bernoulli(key, 0.5, (4000, 2)), 1.0, -1.0)
    noise = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(12), 0.9, (4000, 12)), 1.0, -1.0)
    samples = jnp.repeat(groups, 6, axis=1) * noise  # each spin agrees with its group 90% of the time
    data_m, data_pair = ls.sample_moments(samples)
    mcmc = ls.boltzmann_learning_mcmc(samples, jax.random.PRNGKey(13), iterations=300, chains=256)
    exact_m, exact_pair, _ = ls.exact_moments(mcmc.model)
    assert np.max(np.abs(exact_m - data_m)) < 0.03
    assert np.max(np.abs(exact_pair - data_pair)) < 0.03
    truth = ls.random_ising(jax.random.PRNGKey(0), 12, coupling=0.15, field=0.3)  # and a known model's couplings
    known = ls.boltzmann_learning_mcmc(ls.metropolis(truth, key, chains=64, sweeps=300, burn_in=100, thin=2), key, chains=256)
    off = ~np.eye(12, dtype=bool)
    assert np.max(np.abs(np.asarray(known.model.J - truth.J))[off]) < 0.08
    assert np.max(np.abs(np.asarray(known.model.h - truth.h))) < 0.08
    _, bp_pair, _ = ls.exact_moments(ls.boltzmann_learning(samples, iterations=300).model)
    assert np.max(np.abs(bp_pair - data_pair)) > 0.2
    checks = ls.metropolis(mcmc.model, jax.random.PRNGKey(14), chains=64, sweeps=300, burn_in=100, init=samples[:64])
    mean_error, correlation_error = ls.moment_errors(checks, samples)
    assert float(mean_error) < 0.1 and float(correlation_error) < 0.1
    np.testing.assert_allclose(ls.moment_errors(checks, ls.connected_moments(samples)), (mean_error, correlation_error), rtol=1e-12)
    with pytest.raises(ValueError, match="one starting state per chain"):
        ls.metropolis(mcmc.model, key, chains=8, sweeps=2, burn_in=0, init=samples[:4])


def test_relabelled_hidden_units_compute_the_same_function():
    from mdl_jax import binary

    widths = (6, 5, 4, 3)
    samples = np.asarray(jnp.where(jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (5, 6 * 5 + 5 * 4 + 4 * 3)), 1, -1), np.int8)
    copies = binary.permute_hidden_units(samples, widths, jax.random.PRNGKey(1), copies=3)
    assert copies.shape == (15, samples.shape[1]) and copies.dtype == np.int8
    x = jax.random.normal(jax.random.PRNGKey(2), (40, 6))
    outputs = lambda flat: binary.binary_logits([jnp.asarray(w, x.dtype) for w in binary.split_layers(flat, widths)], x)
    for k in range(15):
        np.testing.assert_allclose(outputs(copies[k]), outputs(samples[k % 5]), atol=1e-5)
    assert np.sum(copies[5:10] != samples) > 0  # the copies are relabelled, not the originals
    np.testing.assert_array_equal(np.sort(copies[:5], axis=1), np.sort(samples, axis=1))  # same weights, moved
    with pytest.raises(ValueError, match="widths"):
        binary.split_layers(samples, (6, 5, 3))


def test_shallow_verdicts_apply_the_fixed_thresholds():
    fit = {"metropolis_correlation_error": 0.009, "metropolis_correlation_noise": 0.008, "independent_correlation_error": 0.05,
           "hysteresis": 0.6, "hysteresis_median": 0.5, "metropolis_hysteresis_each": np.array([0.5, 0.4, 0.6, 0.45, 0.5])}
    fit["metropolis_hysteresis"] = float(fit["metropolis_hysteresis_each"].max())
    authors = {**fit, "max_distance_jump": 0.7, "metropolis_hysteresis": 0.29, "reversed_state_fraction": 0.0, "d_after_jump": 0.99}
    out = ls.shallow_verdicts(fit, [0.05, 0.1], authors=authors)
    assert out["shallow_faithful"]["verdict"] == "reproduced" and out["shallow_faithful"]["chain_loop_median"] == 0.5
    assert not out["shallow_authors_procedure"]["passes"]  # its chains' loop is below 0.3
    narrow = {**fit, "metropolis_hysteresis_each": np.array([0.07, 0.09, 0.12, 0.08, 0.05])}
    assert ls.shallow_verdicts(narrow, [0.02])["shallow_faithful"]["verdict"] == "not reproduced by a fit that matches the data"
    assert ls.shallow_verdicts(fit, [0.2])["shallow_faithful"]["verdict"] == "not reproduced by a fit that matches the data"
    loose = {**fit, "metropolis_correlation_error": 0.02}  # 2.5x the check's noise
    assert ls.shallow_verdicts(loose, [0.05])["shallow_faithful"]["verdict"] == "undecided: the fit does not match the data"
    assert "shallow_authors_procedure" not in ls.shallow_verdicts(fit, [0.05])


def test_fit_and_examine_names_an_unknown_fit():
    with pytest.raises(ValueError, match="unknown fit 'plm'; choose one of mcmc, bp"):
        ls.fit_and_examine(jnp.ones((4, 3)), "plm", jax.random.PRNGKey(0), fit_options={}, examine_options={})


def test_fit_and_examine_warns_of_a_fit_worse_than_no_couplings():
    """A diverged fit (its chains stuck in a ferromagnetic state) is named; a weak part whose
    correlations are at the check's noise level (ITR) is not."""
    from mdl_jax.landscape import verdicts

    fit = ls.BoltzmannFit(ls.Ising(jnp.zeros((3, 3)), jnp.zeros(3)), jnp.asarray(0.18), jnp.asarray([0.0735, 0.2, 0.19]))
    check = lambda error, baseline, noise: {"metropolis_correlation_error": error, "independent_correlation_error": baseline,
                                            "metropolis_correlation_noise": noise}
    fit_and_examine = lambda: ls.fit_and_examine(jnp.ones((4, 3)), "mcmc", jax.random.PRNGKey(0), fit_options={}, examine_options={})
    with mock.patch.object(verdicts, "boltzmann_learning_mcmc", return_value=fit):
        with mock.patch.object(verdicts, "examine", return_value=check(0.183, 0.0515, 0.0151)):
            with pytest.warns(RuntimeWarning, match=r"by 0.183, more than a model without couplings \(0.0515\).*from 0.0735 to 0.19"):
                assert fit_and_examine()["fit"] == "mcmc"
        with mock.patch.object(verdicts, "examine", return_value=check(0.0134, 0.0083, 0.013)), warnings.catch_warnings():
            warnings.simplefilter("error")
            fit_and_examine()
