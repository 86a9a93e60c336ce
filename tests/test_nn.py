"""Flax mode layers: the letter's MLP rebuilt from ModeDense is mdl_jax.apply, ModeConv is a
convolution with the formed kernel, masks are inert and traced, Flax models train through the
one driver like the MLP methods."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mdl_jax
from mdl_jax.nn import Conv, ModeConv, ModeDense, conv_as_matmul, flax_method
from conftest import random_dataset


class ModeMLP(nnx.Module):
    """The letter's ReLU MLP, one ModeDense per weight layer."""

    def __init__(self, key, spec, dtype):
        self.depth = spec.num_layers
        for l, (a, b, p) in enumerate(zip(spec.widths[:-1], spec.widths[1:], spec.modes)):
            setattr(self, f"dense{l}", ModeDense(a, b, p, key=key, layer=l, dtype=dtype))

    def __call__(self, x, mode_mask=None):
        for l in range(self.depth):
            x = getattr(self, f"dense{l}")(x, None if mode_mask is None else mode_mask[l])
            x = jax.nn.relu(x) if l < self.depth - 1 else x
        return x


class TinyCNN(nnx.Module):
    """Two ModeConv layers and a ModeDense head on (side x side x 1) images."""

    def __init__(self, key, spec, dtype, side=28):
        c1, c2, classes = spec.widths[1], spec.widths[2], spec.widths[3]
        self.side = side
        self.conv0 = ModeConv(1, c1, (3, 3), spec.modes[0], key=key, layer=0, strides=2, dtype=dtype)
        self.conv1 = ModeConv(c1, c2, (3, 3), spec.modes[1], key=key, layer=1, strides=2, dtype=dtype)
        half = lambda n: -(-n // 2)  # SAME padding, stride 2
        flat = half(half(side)) ** 2 * c2
        self.head = ModeDense(flat, classes, spec.modes[2], key=key, layer=2, use_bias=True, dtype=dtype)

    def __call__(self, x, mode_mask=None):
        mask = mode_mask if mode_mask is not None else (None,) * 3
        h = x.reshape(*x.shape[:-1], self.side, self.side, 1)
        h = jax.nn.relu(self.conv0(h, mask[0]))
        h = jax.nn.relu(self.conv1(h, mask[1]))
        return self.head(h.reshape(*h.shape[:-3], -1), mask[2])


@pytest.fixture
def registered():
    names = []

    def register(name, build, **kw):
        mdl_jax.register_method(flax_method(name, build, **kw))
        names.append(name)
        return mdl_jax.get_method(name)

    yield register
    for name in names:
        mdl_jax.unregister_method(name)


def _as_mdl(flax_params, depth):
    return {f: [flax_params[f"dense{l}"][f] for l in range(depth)] for f in ("xi_hat", "sigma", "xi")}


def test_mode_dense_mlp_is_mdl_apply_and_trains_identically(registered, small_data):
    method = registered("flax_mlp", ModeMLP)
    spec = mdl_jax.make_spec((12, 10, 8, 3), (4, 3, 2), "mdl")
    key = jax.random.PRNGKey(3)
    flax_params = method.init(key, spec, jnp.float32)
    chex.assert_trees_all_equal(_as_mdl(flax_params, 3), mdl_jax.init_params(key, spec))  # same draws
    x = jnp.asarray(small_data.test_images)
    chex.assert_trees_all_close(mdl_jax.apply(flax_params, x, spec=spec._replace(method="flax_mlp")),
                                mdl_jax.apply(mdl_jax.init_params(key, spec), x, spec=spec), rtol=1e-6)
    trained = {}
    for name in ("mdl", "flax_mlp"):  # pruning (mdl_jax._prune) works through the Flax model's mode layers too
        sweep = mdl_jax.build_sweep((12, 10, 8, 3), name, modes=[2, 4], seeds=[0, 1], batch_size=50, prune_taus=[0.0, 0.3],
                                    prune_every=1, learning_rates=[0.01])
        trained[name] = mdl_jax.train(sweep.recipe, sweep.runs, small_data, epochs=1)
    chex.assert_trees_all_close(_as_mdl(trained["flax_mlp"].state.params, 3), trained["mdl"].state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(trained["flax_mlp"].metrics.test_accuracy, trained["mdl"].metrics.test_accuracy)
    np.testing.assert_array_equal(trained["flax_mlp"].metrics.active_modes, trained["mdl"].metrics.active_modes)
    assert trained["mdl"].metrics.active_modes[-1, 3].sum() < 12  # p = 4, tau 0.3: pruned


def test_mode_conv_is_the_convolution_with_the_formed_kernel():
    conv = ModeConv(3, 5, (3, 2), 4, key=jax.random.PRNGKey(0), layer=1, strides=(1, 2))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 6, 3))
    layer = conv.mode_layer()
    kernel = ((layer.xi_hat * layer.sigma) @ layer.xi.T).reshape(3, 2, 3, 5)
    direct = jax.lax.conv_general_dilated(x, kernel, (1, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    chex.assert_trees_all_close(conv(x), direct, rtol=1e-5, atol=1e-6)
    assert conv.xi_hat[...].shape == (3 * 2 * 3, 4) and conv.xi[...].shape == (5, 4)


@pytest.mark.parametrize("strides, padding", [((1, 1), "VALID"), ((2, 1), "SAME")])
def test_convolution_as_patches_times_kernel_is_the_convolution(strides, padding):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 9, 8, 4))  # two batch axes
    kernel = jax.random.normal(jax.random.PRNGKey(2), (5, 3, 4, 6))  # HWIO
    direct = jax.lax.conv_general_dilated(x.reshape(6, 9, 8, 4), kernel, strides, padding,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = conv_as_matmul(x, kernel.reshape(-1, 6), (5, 3), strides, padding)
    chex.assert_trees_all_close(ours, direct.reshape(2, 3, *direct.shape[1:]), rtol=1e-5, atol=1e-5)
    plain = Conv(4, 6, (5, 3), key=jax.random.PRNGKey(3), strides=strides, padding=padding)
    chex.assert_trees_all_close(plain(x), conv_as_matmul(x, plain.kernel[...], (5, 3), strides, padding) + plain.bias[...])
    # its kernel gradient under vmap over runs (a sweep) is the gradient of each run alone
    kernels = jax.random.normal(jax.random.PRNGKey(4), (3, 60, 6))
    grad = jax.grad(lambda k: jnp.sum(conv_as_matmul(x[0], k, (5, 3), strides, padding) ** 2))
    chex.assert_trees_all_close(jax.vmap(grad)(kernels), jnp.stack([grad(k) for k in kernels]), rtol=1e-5, atol=1e-4)


def test_masked_modes_contribute_nothing_and_get_no_gradient():
    conv = ModeConv(2, 3, (3, 3), 4, key=jax.random.PRNGKey(0))
    graphdef, state = nnx.split(conv)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 2))
    mask = jnp.asarray([1.0, 1.0, 0.0, 1.0])
    loss = lambda state: jnp.sum(nnx.merge(graphdef, state)(x, mask) ** 2)
    grads = nnx.to_pure_dict(jax.grad(loss)(state))
    for name in ("xi_hat", "sigma", "xi"):
        assert np.all(np.asarray(grads[name])[..., 2] == 0) and np.any(np.asarray(grads[name])[..., 0] != 0)
    perturbed = nnx.to_pure_dict(state)
    perturbed["xi_hat"] = perturbed["xi_hat"].at[:, 2].add(5.0)
    nnx.replace_by_pure_dict(state, perturbed)
    chex.assert_trees_all_close(nnx.merge(graphdef, state)(x, mask), conv(x, mask), rtol=1e-6)


def test_seeds_vmapped_equal_seeds_alone_and_masks_share_one_compilation(registered, small_data):
    method = registered("tiny_cnn", _cnn12)
    spec = mdl_jax.make_spec((12, 4, 6, 3), (3, 3, 2), "tiny_cnn")
    sweep = mdl_jax.build_sweep(spec.widths, "tiny_cnn", modes=[(2, 3, 2), (3, 3, 2)], seeds=[0, 1], batch_size=50)
    together = mdl_jax.train(sweep.recipe, sweep.runs, small_data, epochs=2)
    for run in (1, 2):  # other seed, other p
        one = jax.tree.map(lambda a: a[run:run + 1], sweep.runs)
        alone = mdl_jax.train(sweep.recipe, one, small_data, epochs=2)
        chex.assert_trees_all_close(mdl_jax.select_run(alone.state.params, 0),
                                    mdl_jax.select_run(together.state.params, run), rtol=2e-5, atol=1e-6)
    apply = jax.jit(chex.assert_max_traces(lambda params, x, mask: method.apply(params, x, spec, mask), n=1))
    params, x = method.init(jax.random.PRNGKey(0), spec, jnp.float32), jnp.asarray(small_data.test_images)
    for p in (1, 2, 3):  # another p is another mask, not another program
        apply(params, x, mdl_jax.mode_mask((p, 3, 2), spec.modes))


def _cnn12(key, spec, dtype):
    """TinyCNN on the 12 features of the random dataset, read as a 4 x 3 image (padded to 4 x 4)."""

    class CNN12(TinyCNN):
        def __call__(self, x, mode_mask=None):
            return super().__call__(jnp.pad(x.reshape(*x.shape[:-1], 4, 3), [(0, 0)] * (x.ndim - 1) + [(0, 0), (0, 1)]).reshape(*x.shape[:-1], 16), mode_mask)

    return CNN12(key, spec, dtype, side=4)


@pytest.mark.mnist
def test_a_mode_cnn_learns_mnist_through_the_driver(registered, mnist, tmp_path):
    """Stated before running: at least 95 % test accuracy after 1 epoch (p = 8, 8, 10)."""
    registered("mode_cnn", TinyCNN)
    config = mdl_jax.make_config({"widths": [784, 16, 32, 10], "methods": ["mode_cnn"], "modes": [8], "seeds": [0],
                                  "epochs": 1, "learning_rates": [3e-3]})
    summary = mdl_jax.train_and_evaluate(config, tmp_path / "cnn", progress=False, dataset=mnist)
    assert summary["runs"][0]["final_test_accuracy"] >= 0.95
    saved = mdl_jax.load_params(tmp_path / "cnn", "mode_cnn")
    assert [layer.sigma.shape for layer in mdl_jax.mode_layers(mdl_jax.select_run(saved.params, 0), saved.spec)] == [(8,)] * 3
    assert json.loads((tmp_path / "cnn" / "summary.json").read_text())["table"][0]["seeds"] == 1


def test_the_experiment_vit_has_twelve_mode_layers_and_the_plain_one_none():
    """The ViT of experiments/beyond_mlp.py (trained only there: it compiles slowly)."""
    from experiments import models

    spec = mdl_jax.make_spec(models.VIT_WIDTHS, 4, "vit_modes")
    params = mdl_jax.init_params(jax.random.PRNGKey(0), spec)
    x = jnp.zeros((3, 784))
    chex.assert_shape(mdl_jax.apply(params, x, spec=spec), (3, 10))
    layers = mdl_jax.mode_layers(params, spec)
    assert len(layers) == 12 and [l.xi_hat.shape for l in layers[4:6]] == [(64, 4), (128, 4)]
    plain = mdl_jax.make_spec(models.VIT_WIDTHS, None, "vit_plain")
    assert mdl_jax.param_count(plain) == 71_434 and mdl_jax.param_count(spec) == 13_114
    masked = mdl_jax.zero_inactive_modes(params, spec, mdl_jax.mode_mask((2,) * 12, spec.modes))
    assert all(np.all(np.asarray(l.sigma)[2:] == 0) for l in mdl_jax.mode_layers(masked, spec))


class DropoutNet(nnx.Module):
    """A mode layer, dropout, and a plain Flax head (two weight layers, one mode layer)."""

    def __init__(self, key, spec, dtype, head_out=None):
        self.modes = ModeDense(spec.widths[0], spec.widths[1], spec.modes[0], key=key, layer=0, dtype=dtype)
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=key))
        self.head = nnx.Linear(spec.widths[1], head_out or spec.widths[2], rngs=nnx.Rngs(key), param_dtype=dtype)

    def __call__(self, x, mode_mask=None):
        return self.head(self.drop(jax.nn.relu(self.modes(x, None if mode_mask is None else mode_mask[0]))))


def test_dropout_gets_a_fresh_key_every_step_and_is_off_in_evaluation(registered, small_data):
    method = registered("dropout_net", DropoutNet)
    sweep = mdl_jax.build_sweep((12, 16, 3), "dropout_net", modes=[4, 8], seeds=[0, 1], batch_size=50, learning_rates=[0.03])
    assert [info.modes for info in sweep.infos] == [(4,), (8,)] * 2 and sweep.num_runs == 4  # one label per mode layer
    spec = sweep.recipe.spec
    params, x = method.init(jax.random.PRNGKey(0), spec, jnp.float32), jnp.asarray(small_data.test_images)
    chex.assert_trees_all_equal(mdl_jax.apply(params, x, spec=spec), mdl_jax.apply(params, x, spec=spec))
    noisy = [mdl_jax.apply(params, x, spec=spec, key=jax.random.PRNGKey(k)) for k in (1, 1, 2)]
    chex.assert_trees_all_equal(noisy[0], noisy[1])
    assert not np.allclose(noisy[0], noisy[2]) and not np.allclose(noisy[0], mdl_jax.apply(params, x, spec=spec))
    trained = mdl_jax.train(sweep.recipe, sweep.runs, small_data, epochs=2)
    assert np.all(np.diff(trained.metrics.train_loss, axis=0) < 0)  # it learns, every run
    assert np.all(trained.metrics.test_accuracy[-1] > trained.initial_test_accuracy + 0.1)
    one = jax.tree.map(lambda a: a[3:4], sweep.runs)  # the vmapped sweep draws each run's own dropout masks
    alone = mdl_jax.train(sweep.recipe, one, small_data, epochs=2)
    chex.assert_trees_all_close(mdl_jax.select_run(alone.state.params, 0), mdl_jax.select_run(trained.state.params, 3),
                                rtol=2e-5, atol=1e-6)


class _BatchNormNet(DropoutNet):
    def __init__(self, key, spec, dtype):
        super().__init__(key, spec, dtype)
        self.norm = nnx.BatchNorm(spec.widths[1], rngs=nnx.Rngs(key))


class _NoMaskNet(DropoutNet):
    def __call__(self, x):
        return super().__call__(x)


class _ThreeModeLayers(nnx.Module):
    def __init__(self, key, spec, dtype):
        self.layers = nnx.List([ModeDense(spec.widths[l], spec.widths[l + 1], spec.modes[l], key=key, layer=l) for l in range(3)])

    def __call__(self, x, mode_mask=None):
        for l, layer in enumerate(self.layers):
            x = layer(x, mode_mask[l])
        return x


@pytest.mark.parametrize("build, widths, message", [
    (_BatchNormNet, (12, 16, 3), r"holds nnx.BatchStat variables \(norm.mean, norm.var\).*use nnx.LayerNorm"),
    (_NoMaskNet, (12, 16, 3), r"its __call__ must take the mode mask as second argument, def __call__\(self, x, mode_mask=None\)"),
    (lambda key, spec: DropoutNet(key, spec, jnp.float32), (12, 16, 3), r"the builder must take \(key, spec, dtype\)"),
    (_ThreeModeLayers, (12, 16, 3), r"reads spec.widths and spec.modes beyond their ends"),
    (lambda key, spec, dtype: DropoutNet(key, spec, dtype, head_out=2), (12, 16, 3),
     r"maps inputs \(batch, 12\) to \(2, 2\), not \(batch, 3\): its output width must be widths\[-1\] = 3"),
])
def test_a_model_the_trainer_cannot_train_is_refused_at_build_time(registered, build, widths, message):
    with pytest.raises(mdl_jax.SpecError, match=message):
        registered("bad_model", build)
        mdl_jax.build_sweep(widths, "bad_model", modes=[2], seeds=[0])

