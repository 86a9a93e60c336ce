"""Models: parameter counts, the paper's gradient equations, masks, initialisation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mdl_jax
from mdl_jax import SpecError, make_spec

WIDTHS = (784, 100, 100, 10)


@pytest.fixture(autouse=True)
def _strict_promotion():
    """Our own model code is promotion-clean: silent rank and dtype promotion raise here (as in
    diffrax's suite). Training (optax's Adam) needs standard promotion, see conftest.py."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.mark.parametrize(
    "method, modes, expected",
    [
        ("mdl", 30, 35_910),  # the letter: 40 % of BP's weights
        ("bp", None, 89_400),
        ("mdl_1l1p", 30, 30 * (784 + 100 + 100 + 10) + 3 * 30),
        ("two_factor", 30, 30 * (884 + 200 + 110)),
        ("svd", None, 100 * (884 + 1) + 100 * (200 + 1) + 10 * (110 + 1)),
    ],
)
def test_param_count(method, modes, expected):
    spec = make_spec(WIDTHS, modes, method)
    assert mdl_jax.param_count(spec) == expected
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    assert sum(a.size for a in jax.tree.leaves(params)) == expected
    assert round(35_910 / 89_400, 3) == 0.402


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def eq3_gradients(xi_hat, sigma, xi, x, labels):
    """The letter's Eq. (3) with the error-backpropagation recursion, in plain NumPy.

    K^L = softmax - one_hot (per example, divided by the batch size for the mean loss);
    Delta xi_{ja}     = K_j Sigma_a sum_i xi_hat_{ia} h_i
    Delta Sigma_a     = sum_j K_j xi_{ja} sum_i xi_hat_{ia} h_i
    Delta xi_hat_{ia} = Sigma_a h_i sum_j K_j xi_{ja}
    K^l_i = sum_j K^{l+1}_j sum_a xi_hat_{ia} Sigma_a xi_{ja} f'(z^l_i)
    """
    num_layers, batch = len(sigma), len(x)
    h, z = [x], []
    for l in range(num_layers):
        weight = xi_hat[l] @ np.diag(sigma[l]) @ xi[l].T
        z.append(h[-1] @ weight)
        h.append(np.maximum(z[-1], 0) if l < num_layers - 1 else _softmax(z[-1]))
    error = (h[-1] - np.eye(h[-1].shape[1])[labels]) / batch
    g_xi_hat, g_sigma, g_xi = [None] * num_layers, [None] * num_layers, [None] * num_layers
    for l in reversed(range(num_layers)):
        kappa = h[l] @ xi_hat[l]  # linear field of the modes, (batch, p)
        g_xi[l] = np.einsum("bj,a,ba->ja", error, sigma[l], kappa)
        g_sigma[l] = np.einsum("bj,ja,ba->a", error, xi[l], kappa)
        g_xi_hat[l] = np.einsum("a,bi,bj,ja->ia", sigma[l], h[l], error, xi[l])
        if l > 0:
            error = np.einsum("bj,ia,a,ja->bi", error, xi_hat[l], sigma[l], xi[l]) * (z[l - 1] > 0)
    return g_xi_hat, g_sigma, g_xi


def _cross_entropy(params, x, labels, spec):
    logits = mdl_jax.apply(params, x, spec=spec)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    return rng.random((16, 12)), rng.integers(0, 4, 16)


def test_grad_matches_eq3_1l2p(batch):
    x, labels = batch
    with jax.enable_x64(True):
        spec = make_spec((12, 9, 7, 4), (5, 4, 3), "mdl")
        params = mdl_jax.init_params(jax.random.PRNGKey(3), spec, dtype=jnp.float64)
        grads = jax.grad(_cross_entropy)(params, jnp.asarray(x), jnp.asarray(labels), spec)
        p = jax.tree.map(np.asarray, params)
        expected = eq3_gradients(p["xi_hat"], p["sigma"], p["xi"], x, labels)
    for name, want in zip(("xi_hat", "sigma", "xi"), expected):
        for l in range(spec.num_layers):
            np.testing.assert_allclose(grads[name][l], want[l], rtol=1e-10, atol=1e-13)


def test_grad_matches_eq3_1l1p(batch):
    """1L1P: a shared hidden pattern gets the xi gradient of one layer plus the xi_hat of the next."""
    x, labels = batch
    with jax.enable_x64(True):
        spec = make_spec((12, 9, 7, 4), 5, "mdl_1l1p")
        params = mdl_jax.init_params(jax.random.PRNGKey(4), spec, dtype=jnp.float64)
        grads = jax.grad(_cross_entropy)(params, jnp.asarray(x), jnp.asarray(labels), spec)
        pat = [np.asarray(a) for a in params["patterns"]]
        g_xi_hat, g_sigma, g_xi = eq3_gradients(pat[:-1], [np.asarray(s) for s in params["sigma"]], pat[1:], x, labels)
    expected_patterns = [g_xi_hat[0]] + [g_xi[l - 1] + g_xi_hat[l] for l in (1, 2)] + [g_xi[2]]
    for got, want in zip(grads["patterns"], expected_patterns):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    for got, want in zip(grads["sigma"], g_sigma):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_effective_weights_equal_eq1():
    spec = make_spec((6, 5, 3), (4, 2), "mdl")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    for l, w in enumerate(mdl_jax.effective_weights(params, spec)):
        explicit = params["xi_hat"][l] @ jnp.diag(params["sigma"][l]) @ params["xi"][l].T
        np.testing.assert_allclose(w, explicit, rtol=1e-5, atol=1e-7)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 6))
    w0, w1 = mdl_jax.effective_weights(params, spec)
    np.testing.assert_allclose(mdl_jax.apply(params, x, spec=spec), jax.nn.relu(x @ w0) @ w1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["mdl", "mdl_1l1p", "two_factor"])
def test_init_of_a_mode_does_not_depend_on_p(method):
    key = jax.random.PRNGKey(7)
    small = mdl_jax.init_params(key, make_spec((10, 8, 3), 3, method))
    large = mdl_jax.init_params(key, make_spec((10, 8, 3), 6, method))
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
        np.testing.assert_array_equal(a, b[..., :3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_mode_column_is_drawn_from_its_own_key(dtype):
    """Column ``a`` of factor ``f`` of layer ``l`` is ``s_l * normal(fold_in(factor_key(key, l, f), a))``
    as drawn alone (the keys are derived for all factors at once), compiled or not. To the last
    bit but one: XLA folds ``s_l`` into the draw's own factor sqrt(2) in a program, not eagerly."""
    from mdl_jax._methods import _SIGMA, _XI, _XI_HAT, factor_key

    widths, key = (9, 7, 3), jax.random.PRNGKey(11)
    spec = make_spec(widths, [2, 4], "mdl")
    with jax.enable_x64(dtype == "float64"):
        init = lambda k: mdl_jax.init_params(k, spec, dtype=jnp.dtype(dtype))
        for params in (init(key), jax.jit(init)(key)):
            for l, p in enumerate(spec.modes):
                for factor, name, rows in ((_XI_HAT, "xi_hat", widths[l]), (_SIGMA, "sigma", 1), (_XI, "xi", widths[l + 1])):
                    for a in range(p):
                        alone = jax.random.normal(jax.random.fold_in(factor_key(key, l, factor), a), (rows,), jnp.dtype(dtype))
                        np.testing.assert_allclose(np.asarray(params[name][l]).reshape(rows, p)[:, a],
                                                   np.asarray(mdl_jax.init_scale(widths[l]) * alone),
                                                   rtol=2 * np.finfo(dtype).eps, atol=0, err_msg=f"{name}[{l}]")


def test_init_scale_matches_the_paper():
    spec = make_spec((784, 100, 10), 400, "mdl")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    target = (784 * np.log(784)) ** (-1 / 6)
    for name in ("xi_hat", "sigma", "xi"):
        assert abs(float(jnp.std(params[name][0])) / target - 1) < 0.05
    w_std = float(jnp.std(mdl_jax.effective_weights(params, spec)[0]))
    assert abs(w_std / np.sqrt(400 / (784 * np.log(784))) - 1) < 0.05


@pytest.mark.parametrize("method", ["mdl", "mdl_1l1p", "two_factor", "svd"])
def test_masked_modes_are_inert(method):
    """Masked modes change nothing in the output and get exactly zero gradient."""
    spec = make_spec((10, 8, 4), 4, method)
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    mask = tuple(jnp.asarray([1.0, 1.0, 0.0, 0.0]) for _ in range(2))
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 10))
    labels = jnp.asarray([0, 1, 2, 3, 0])

    def loss(params):
        logits = mdl_jax.apply(params, x, spec=spec, mode_mask=mask)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + mdl_jax.penalty(params, spec, mask)

    grads = jax.grad(loss)(params)
    for g in jax.tree.leaves(grads):
        np.testing.assert_array_equal(g[..., 2:], 0.0)
    perturbed = jax.tree.map(lambda a: a.at[..., 2:].add(3.0), params)
    np.testing.assert_allclose(loss(perturbed), loss(params), rtol=1e-6)


def test_svd_penalty_formula():
    spec = make_spec((6, 4, 3), None, "svd")
    params = mdl_jax.init_params(jax.random.PRNGKey(2), spec)
    params = jax.tree.map(lambda a: a * 1.3, params)  # move away from exact orthogonality
    expected = 0.0
    for u, s, v in zip(params["u"], params["s"], params["v"]):
        u, s, v = map(np.asarray, (u, s, v))
        r = len(s)
        ortho = np.sum((u.T @ u - np.eye(r)) ** 2) + np.sum((v.T @ v - np.eye(r)) ** 2)
        expected += 30.0 * ortho / r**2 + np.abs(s).sum() / np.sqrt((s**2).sum())
    np.testing.assert_allclose(mdl_jax.penalty(params, spec), expected, rtol=1e-5)
    # The initial factors are an exact SVD: orthonormal, so only the sparsity term is left.
    exact = mdl_jax.init_params(jax.random.PRNGKey(2), spec)
    sparsity = sum(float(jnp.abs(s).sum() / jnp.linalg.norm(s)) for s in exact["s"])
    np.testing.assert_allclose(mdl_jax.penalty(exact, spec), sparsity, rtol=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (((784, 100, 10), 0, "mdl"), "number of modes p must be an integer >= 1"),
        (((784, 100, 10), -3, "mdl"), "p must be an integer >= 1"),
        (((784, 100, 10), (30,), "mdl"), "1 mode counts [30] for 2 weight layers"),
        (((784,), 30, "mdl"), "describe no weight layer"),
        (((784, 0, 10), 30, "mdl"), "every width must be an integer >= 1"),
        (((784, 100, 10), (30, 20), "mdl_1l1p"), "every layer needs the same p"),
        (((784, 100, 10), 30, "bp"), "takes no mode count"),
        (((784, 100, 10), None, "mdl"), "needs a mode count"),
        (((784, 100, 10), 30, "mlp"), "unknown method 'mlp'"),
        (((784, 100, 10), 200, "svd"), "svd rank 200 of layer 0 exceeds"),
    ],
)
def test_bad_specs_raise_clear_errors(args, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_spec(*args)


def test_params_whose_widths_do_not_chain_are_rejected():
    spec = make_spec((10, 8, 4), 3, "mdl")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    mdl_jax.check_params(params, spec)
    params["xi_hat"][1] = jnp.zeros((9, 3))
    with pytest.raises(SpecError, match=r"xi_hat\[1\] has shape \(9, 3\), expected \(8, 3\).*do not chain"):
        mdl_jax.check_params(params, spec)
    with pytest.raises(SpecError, match="needs"):
        mdl_jax.check_params({"weights": []}, spec)


def test_bp_fanin_is_bp_with_weights_scaled_by_the_fan_in():
    """The authors' BP (method notes, section 3): z = h @ W / sqrt(N_l) with W ~ N(0, 1), so the
    same function as standard BP at W / sqrt(N_l) and the same parameter count; its gradient
    in W is the standard one divided by sqrt(N_l)."""
    widths = (12, 9, 4)
    fanin, plain = make_spec(widths, None, "bp_fanin"), make_spec(widths, None, "bp")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), fanin)
    assert mdl_jax.param_count(fanin) == mdl_jax.param_count(plain) == 12 * 9 + 9 * 4
    assert abs(float(jnp.std(params["weights"][0])) - 1.0) < 0.2  # N(0, 1), not N(0, 1/N)
    scaled = {"weights": [w / w.shape[0] ** 0.5 for w in params["weights"]]}
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 12))
    np.testing.assert_allclose(mdl_jax.apply(params, x, spec=fanin), mdl_jax.apply(scaled, x, spec=plain), rtol=1e-5)
    loss = lambda p, spec: jnp.sum(mdl_jax.apply(p, x, spec=spec) ** 2)
    g_fanin, g_plain = jax.grad(loss)(params, fanin), jax.grad(loss)(scaled, plain)
    for w, a, b in zip(params["weights"], g_fanin["weights"], g_plain["weights"]):
        np.testing.assert_allclose(a, b / w.shape[0] ** 0.5, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method, modes", [("bp", None), ("bp_fanin", None), ("mdl", 20), ("mdl_1l1p", 20)])
def test_matmul_flops_match_what_xla_counts_in_the_compiled_step(method, modes):
    spec = mdl_jax.make_spec((784, 500, 500, 10), modes, method)
    params, x = mdl_jax.init_params(jax.random.PRNGKey(0), spec), jnp.ones((100, 784))
    loss = lambda p: mdl_jax.apply(p, x, spec=spec).sum()
    counted = {name: jax.jit(f).lower(params).compile().cost_analysis()["flops"] / 100
               for name, f in (("forward", loss), ("training", jax.grad(loss)))}
    ours = mdl_jax.matmul_flops(spec)
    assert ours.forward == pytest.approx(counted["forward"], rel=0.03)  # XLA adds the elementwise work
    assert ours.training == pytest.approx(counted["training"], rel=0.03)
    assert mdl_jax.matmul_flops(mdl_jax.make_spec(WIDTHS, 30)) == (71_640, 167_880)  # the docstring's numbers
