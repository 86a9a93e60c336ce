"""Analyses against cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdl_jax
from mdl_jax import analysis
from conftest import random_dataset



def test_mode_importance_formula():
    rng = np.random.default_rng(0)
    xi_hat, sigma, xi = rng.normal(size=(7, 4)), rng.normal(size=4), rng.normal(size=(5, 4))
    tau = analysis.mode_importance(mdl_jax.ModeLayer(jnp.asarray(xi_hat), jnp.asarray(sigma), jnp.asarray(xi)))
    norms = np.linalg.norm(xi, axis=0) + np.linalg.norm(xi_hat, axis=0)
    gamma = np.abs(sigma).sum() / norms.sum()
    np.testing.assert_allclose(tau, gamma * norms + np.abs(sigma), rtol=1e-5)
    # a masked mode is absent: tau 0, and gamma of the others as without it
    masked = analysis.mode_importance(mdl_jax.ModeLayer(jnp.asarray(xi_hat), jnp.asarray(sigma), jnp.asarray(xi)),
                                      jnp.asarray([1.0, 1.0, 1.0, 0.0]))
    three = analysis.mode_importance(mdl_jax.ModeLayer(jnp.asarray(xi_hat[:, :3]), jnp.asarray(sigma[:3]), jnp.asarray(xi[:, :3])))
    np.testing.assert_allclose(masked, np.append(three, 0.0), rtol=1e-5)


def test_removal_mask():
    scores = jnp.asarray([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    np.testing.assert_array_equal(analysis.removal_mask(scores, 0.0), np.ones(6))
    np.testing.assert_array_equal(analysis.removal_mask(scores, 0.5), [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(analysis.removal_mask(scores, 1.0), np.zeros(6))


def test_removal_curves_on_a_trained_network():
    data = random_dataset()
    sweep = mdl_jax.build_sweep((12, 10, 3), "mdl_1l1p", modes=[6], seeds=[0], batch_size=50, learning_rates=[2e-2])
    params = mdl_jax.select_run(mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=8).state.params, 0)
    spec = sweep.recipe.spec
    x, y = jnp.asarray(data.test_images), jnp.asarray(data.test_labels)
    curves = analysis.removal_curves(params, spec, x, y, layer=0, fractions=jnp.linspace(0, 1, 7),
                                     key=jax.random.PRNGKey(0), draws=4)
    full = float(analysis.accuracy(params, x, y, spec=spec))
    assert full > 0.6
    assert curves.random.shape == (7, 4)
    np.testing.assert_allclose(curves.weakest_first[0], full)
    np.testing.assert_allclose(curves.random[0], full)
    # everything removed: zero logits, argmax picks class 0
    np.testing.assert_allclose(curves.weakest_first[-1], np.mean(data.test_labels == 0), rtol=1e-6)
    tau = analysis.mode_importance(mdl_jax.mode_layers(params, spec)[0])
    by_hand = analysis.accuracy(params, x, y, spec=spec, mode_mask=(analysis.removal_mask(tau, 0.5), jnp.ones(6)))
    np.testing.assert_allclose(curves.weakest_first[3], by_hand)
    sigma = jnp.abs(mdl_jax.mode_layers(params, spec)[0].sigma)  # the authors' ranking
    by_sigma = analysis.accuracy(params, x, y, spec=spec, mode_mask=(analysis.removal_mask(sigma, 0.5), jnp.ones(6)))
    np.testing.assert_allclose(curves.smallest_sigma_first[3], by_sigma)


def test_pattern_dispersion():
    patterns = jnp.asarray([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 2.0, -2.0]]) + 5.0  # centroid (5, 5)
    np.testing.assert_allclose(analysis.pattern_dispersion(patterns), 1.5)


def test_subspace_overlap_of_orthogonal_and_equal_subspaces():
    rng = np.random.default_rng(1)
    n = 4000
    a = np.zeros((n, 6)); a[:, :2] = rng.normal(size=(n, 2)) * [3, 2]
    b = np.zeros((n, 6)); b[:, 2:4] = rng.normal(size=(n, 2)) * [3, 2]
    labels = jnp.asarray(np.repeat([0, 1], n))
    orthogonal = analysis.subspace_overlap(jnp.asarray(np.vstack([a, b]) + 0.01 * rng.normal(size=(2 * n, 6))), labels, 2, dim=2)
    equal = analysis.subspace_overlap(jnp.asarray(np.vstack([a, a[::-1]])), labels, 2, dim=2)
    assert float(orthogonal) < 0.05 and float(equal) > 0.999


def test_two_power_laws_recover_break_and_exponents():
    rank = np.arange(1, 71)
    tau = np.where(rank < 10, rank ** -0.3, 10 ** -0.3 * (rank / 10.0) ** -2.0)
    fit = analysis.fit_two_power_laws(tau * np.exp(np.random.default_rng(0).normal(0, 0.01, 70)))
    assert fit.break_rank in (9, 10, 11)
    assert abs(fit.leading_exponent - 0.3) < 0.05 and abs(fit.tail_exponent - 2.0) < 0.05


def test_fixed_split_fits_each_side_on_its_own():
    """The authors' imposed split at rank 10: exact power laws on each side give their slopes
    back, wherever the true break lies only through the side that holds it."""
    rank = np.arange(1, 71)
    tau = np.where(rank <= 10, rank ** -0.3, 10 ** -0.3 * (rank / 10.0) ** -0.82)
    fixed = analysis.fit_fixed_split(tau, split=10)
    assert fixed.split == 10 and fixed.head_slope == pytest.approx(-0.3) and fixed.tail_slope == pytest.approx(-0.82)
    shifted = analysis.fit_fixed_split(np.where(rank <= 20, rank ** -0.3, 20 ** -0.3 * (rank / 20.0) ** -2.0), split=10)
    assert shifted.head_slope == pytest.approx(-0.3) and shifted.tail_slope < -0.82  # a mix of both laws
    with pytest.raises(ValueError, match="split=69"):
        analysis.fit_fixed_split(tau, split=69)


def test_least_modes_laws_tell_a_flattening_law_from_a_rising_one():
    widths = [10, 25, 50, 100, 200, 400, 800]
    log_law = {n: round(5.2 * np.log(n) - 4) for n in widths}  # least p are whole numbers: 8, 13, 16, 20, 24, 27, 31
    flat = {n: log_law[min(n, 100)] for n in widths}  # the law up to N = 100, then constant
    law = analysis.fit_least_modes(flat)
    assert law["saturating"]["onset"] == 100 and law["saturating"]["plateau"] == log_law[100]
    assert law["saturating"]["slope"] == pytest.approx(5.2, abs=0.5) and law["saturating"]["rss"] < 0.5
    assert law["log"]["rss"] > 10 and law["preferred"] == "saturating"
    assert law["held_out"]["width"] == 800 and law["held_out"]["saturating"]["error"] == 0
    assert law["held_out"]["log"]["error"] > 3  # the ln N law, extrapolated, overshoots the flat part
    rising = analysis.fit_least_modes({**log_law, 50: None})
    assert rising["log"]["slope"] == pytest.approx(5.2, abs=0.1) and rising["log"]["r2"] > 0.99
    assert rising["preferred"] == "log" and abs(rising["held_out"]["log"]["error"]) < 0.5
    assert rising["held_out"]["saturating"]["error"] < -3  # a constant undershoots the still-rising law
    assert analysis.least_modes_law(rising["log"], 800) == pytest.approx(log_law[800], abs=0.5)
    assert analysis.least_modes_law(law["saturating"], [400]) == pytest.approx([log_law[100]])
    assert "from N = 100" in analysis.describe_law(law["saturating"])
    assert analysis.fit_least_modes({10: 4, 25: None}) is None
    assert analysis.fit_least_modes({10: 4, 25: 8})["saturating"] is None
    with pytest.raises(ValueError, match="three widths"):
        analysis.fit_saturating([10, 20], [1, 2])


def test_least_modes_and_log_fit():
    bp = np.asarray([0.975, 0.977, 0.976])
    acc = np.asarray([[0.95, 0.96, 0.955], [0.970, 0.972, 0.971], [0.975, 0.976, 0.9755], [0.977, 0.978, 0.976]])
    assert analysis.least_modes([10, 20, 30, 40], acc, bp) == 30
    assert analysis.least_modes([10], acc[:1], bp) is None
    widths = [25, 50, 100, 200]
    fit = analysis.fit_log_growth(widths, 4.0 * np.log(widths) - 3.0)
    assert abs(fit.slope - 4.0) < 1e-9 and abs(fit.r2 - 1.0) < 1e-12


def test_pattern_orthogonality():
    spec = mdl_jax.make_spec((4, 4, 4), 2, "mdl")
    e = jnp.eye(4)
    params = {"xi_hat": [e[:, :2], e[:, 2:]], "sigma": [jnp.ones(2), jnp.ones(2)], "xi": [e[:, 2:], e[:, :2]]}
    result = analysis.pattern_orthogonality(params, spec)
    assert result.inter == [0.0, 0.0]  # xi_hat and xi of each matrix span orthogonal axes
    assert result.intra == [1.0 / 2]  # xi[0] = xi_hat[1]: matched pairs |cos| 1, the others 0


def test_geometric_maps_compose_to_the_hidden_layer():
    spec = mdl_jax.make_spec((2, 3, 1), 3, "mdl")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    x, _ = mdl_jax.gaussian_mixture(jax.random.PRNGKey(1), 50)
    maps = analysis.geometric_maps(mdl_jax.mode_layers(params, spec)[0], x)
    _, hidden = mdl_jax.apply(params, x, spec=spec, return_hidden=True)
    np.testing.assert_allclose(maps["hidden"], hidden[0], rtol=1e-5, atol=1e-6)
    assert maps["projected"].shape == (50, 3)


def test_mse_loss_learns_the_gaussian_mixture_with_one_output():
    """The letter's Fig. 1 setting: 2-3-1, MSE on targets +-1. Without biases the network is
    positively homogeneous, and three ReLU units cannot give the four quadrants of Eq. (2)'s
    XOR layout alternating signs: about 3/4 of the points is the ceiling (the authors' Fig. 1
    script plots only the correctly classified points)."""
    data = mdl_jax.gaussian_mixture_dataset(jax.random.PRNGKey(0))
    sweep = mdl_jax.build_sweep((2, 3, 1), "mdl", modes=[3], seeds=[0, 1, 2], learning_rates=[0.02], loss="mse")
    result = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=15)
    assert 0.7 < float(result.metrics.test_accuracy[-1].max()) < 0.8
    assert np.all(result.metrics.train_loss[-1] < result.metrics.train_loss[0])
