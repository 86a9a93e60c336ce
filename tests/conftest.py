"""Shared fixtures: a tolerance table, small datasets, real MNIST.

Dtype promotion is JAX's standard one for the whole suite: optax's Adam computes
``float ** int32 count``, which strict promotion rejects, so training cannot run under it.
Our own model code is checked under strict promotion in test_models.py.
"""

import atexit
import os
import shutil
import tempfile

# One compilation cache for the whole run, set before JAX loads: the two xdist workers and the
# subprocesses of the scale tests compile many of the same programs. Fresh for every run (the
# process that makes it removes it), so that no run's timing depends on an earlier one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mdl-jax-tests-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# Compiling is most of the suite's time (its programs are small and run briefly). XLA:CPU's
# classic fusion emitters compile them faster than its MLIR ones: 22 of the suite's tests in
# 203-208 s against 252 s on a 2-core EPYC, the CNN test, which runs longest, in 16.2-18.8 s
# against 18.5 s (docs/benchmarks.md). Set before JAX loads and inherited by the subprocesses;
# the library's users, the benchmarks and the figure runs keep XLA's default.
# For the same reason the suite compiles at LLVM -O1 instead of XLA's default -O3 (XLA's own HLO
# optimizations are the same, the machine code is less optimized): with every compilation
# logged, the whole suite took 11 min 25 s against 12 min 31 s on a 2-core Zen 3 EPYC, compiling
# 641 s against 798 s, though the tests whose programs run long took longer (the CNN's 16 s ->
# 25-35 s; docs/benchmarks.md). Tests of a compilation at -O3 ask for it (compiler_options).
for flag in ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1"):
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

import jax  # noqa: E402
import numpy as np
import pytest

import mdl_jax

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])  # in case a plugin loaded JAX first
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 0.2)))

#: Relative tolerances by dtype for comparisons of two computations of the same quantity.
RTOL = {"float32": 2e-5, "float64": 1e-10}


def random_dataset(seed=0, n_train=600, n_test=200, dim=12, classes=3) -> mdl_jax.Dataset:
    """A small learnable classification task: labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(dim, classes))
    x_train, x_test = rng.random((n_train, dim), np.float32), rng.random((n_test, dim), np.float32)
    label = lambda x: np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32)
    return mdl_jax.Dataset("random", x_train, label(x_train), x_test, label(x_test), classes)


@pytest.fixture(scope="session")
def small_data():
    return random_dataset()


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder of real MNIST ($MDL_DATA_DIR); skipped when unset, except in CI where it must be there."""
    folder = os.environ.get(mdl_jax.DATA_DIR_ENV)
    if not folder:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {mdl_jax.DATA_DIR_ENV} to the MNIST folder")
        pytest.skip(f"needs real MNIST: set {mdl_jax.DATA_DIR_ENV} to a folder of its IDX files")
    return os.path.abspath(folder)


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """Real MNIST from $MDL_DATA_DIR (see :func:`mnist_dir`)."""
    return mdl_jax.load_idx_folder(mnist_dir)
