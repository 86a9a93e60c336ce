"""The benchmark's NumPy baselines compute the same gradients as the JAX engine."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mdl_jax

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from numpy_reference import NumpyMDL  # noqa: E402


@pytest.mark.parametrize("dense", [True, False])
def test_numpy_baseline_gradients_equal_jax_grad(dense):
    widths = (20, 12, 8, 4)
    net = NumpyMDL(widths, 5, dense=dense)
    rng = np.random.default_rng(0)
    x = rng.random((16, 20)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    params = {name: [jnp.asarray(layer[i]) for layer in net.factors] for i, name in enumerate(("xi_hat", "sigma", "xi"))}
    spec = mdl_jax.make_spec(widths, 5, "mdl")

    def loss(params):
        logits = mdl_jax.apply(params, x, spec=spec)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss)(params)
    for l, layer in enumerate(net.gradients(x, np.eye(4, dtype=np.float32)[labels])):
        for i, name in enumerate(("xi_hat", "sigma", "xi")):
            np.testing.assert_allclose(layer[i], grads[name][l], rtol=2e-4, atol=1e-6)


def test_the_ode_benchmark_prints_progress_to_stderr_so_json_stdout_parses():
    """benchmarks/ode.py needs numba (the bench extra), so its prints are read from the source:
    outside main, which prints the results, every print goes to stderr."""
    import ast

    tree = ast.parse((Path(__file__).parents[1] / "benchmarks" / "ode.py").read_text())
    progress = [call for function in tree.body if isinstance(function, ast.FunctionDef) and function.name != "main"
                for call in ast.walk(function) if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print"]
    assert len(progress) >= 2
    assert all(any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in call.keywords) for call in progress)

