"""Binary-weight networks trained by local reparametrisation, and samples of their weights.

Every weight ``w = +-1`` has a trainable logit ``theta`` with ``P(w = +1) = sigmoid(theta)``,
mean ``mu = tanh(theta / 2)`` and variance ``1 - mu^2``. A layer's pre-activation is sampled
from its Gaussian, ``z = x mu + sqrt(x^2 (1 - mu^2)) eps`` (Shayer et al. 2018), so the loss is
differentiable in theta. Hidden units: ``f(z) = (max(0, z) + 0.1 min(0, z)) / sqrt(fan_in)``;
no biases; linear output logits, softmax cross-entropy (``effective-model-notes.md`` section 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdl_jax._data import Dataset


def pca_project(dataset: Dataset, components: int = 20) -> Dataset:
    """Projects the images on the first principal components of the (centred, not whitened)
    training images."""
    mean = dataset.train_images.mean(0)
    centred = dataset.train_images - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    basis = vectors[:, ::-1][:, :components].astype(np.float32)
    return dataset._replace(
        name=f"{dataset.name}-pca{components}",
        train_images=(centred @ basis).astype(np.float32), test_images=((dataset.test_images - mean) @ basis).astype(np.float32),
    )


def _hidden(z: jax.Array, fan_in: int) -> jax.Array:
    return (jax.nn.relu(z) + 0.1 * jnp.minimum(z, 0.0)) / math.sqrt(fan_in)


def init_logits(key: jax.Array, widths: Sequence[int], *, scale: float = 0.1) -> list[jax.Array]:
    """Logits ``theta ~ N(0, scale^2)`` for every weight of every layer."""
    keys = jax.random.split(key, len(widths) - 1)
    return [scale * jax.random.normal(k, (a, b)) for k, a, b in zip(keys, widths[:-1], widths[1:])]


def sampled_logits(logits: list[jax.Array], x: jax.Array, key: jax.Array) -> jax.Array:
    """Network output with every pre-activation sampled from its local Gaussian."""
    keys = jax.random.split(key, len(logits))
    h = x
    for l, (theta, k) in enumerate(zip(logits, keys)):
        mu = jnp.tanh(theta / 2)
        z = h @ mu + jnp.sqrt(jnp.maximum((h**2) @ (1 - mu**2), 1e-12)) * jax.random.normal(k, (h.shape[0], mu.shape[1]))
        h = _hidden(z, theta.shape[0]) if l < len(logits) - 1 else z
    return h


def binary_logits(weights: list[jax.Array], x: jax.Array) -> jax.Array:
    """Network output for one configuration of binary weights."""
    h = x
    for l, w in enumerate(weights):
        z = h @ w
        h = _hidden(z, w.shape[0]) if l < len(weights) - 1 else z
    return h


class BinaryTraining(NamedTuple):
    logits: list[jax.Array]  # final theta, leading seed axis
    test_accuracy: jax.Array  # (epochs, seeds) accuracy of one sampled configuration per epoch


def train_binary(
    dataset: Dataset, widths: Sequence[int], *, seeds: int, epochs: int, lr: float = 0.3,
    batch_size: int = 200, l2: float = 1e-5, n_train: int | None = None, key: jax.Array | None = None,
) -> BinaryTraining:
    """Trains ``seeds`` binary networks at once (vmapped), Adam on the logits with an L2 penalty.

    Run ``r`` draws everything (initial logits, each epoch's order, samples and test
    configuration) from its own key, ``split(key, seeds)[r]`` (``key`` defaults to
    ``PRNGKey(0)``). One compiled program per shape: a second call with the same shapes and
    settings compiles nothing. ``n_train`` keeps only the first training images (the
    over-parametrised regime).
    """
    x_all = jnp.asarray(dataset.train_images[:n_train])
    y_all = jnp.asarray(dataset.train_labels[:n_train])
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, seeds)
    logits, accuracy = _train_runs(
        keys, x_all, y_all, jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels),
        widths=tuple(widths), epochs=epochs, lr=lr, batch=min(batch_size, x_all.shape[0]), l2=l2,
    )
    return BinaryTraining(logits, accuracy.T)


@functools.partial(jax.jit, static_argnames=("widths", "epochs", "lr", "batch", "l2"))
def _train_runs(keys, x_all, y_all, x_test, y_test, *, widths, epochs, lr, batch, l2):
    """The vmapped training of :func:`train_binary`: final logits and per-epoch accuracy."""
    n = x_all.shape[0]
    steps = n // batch
    optimizer = optax.adam(lr)

    def loss(logits, x, y, key):
        out = sampled_logits(logits, x, key)
        ce = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return ce + l2 * sum(jnp.sum(t**2) for t in logits)

    def epoch(state, key, epoch_index):
        logits, opt_state = state
        k_order, k_steps, k_test = jax.random.split(jax.random.fold_in(key, epoch_index), 3)
        order = jax.random.permutation(k_order, n)[: steps * batch].reshape(steps, batch)

        def step(carry, inputs):
            logits, opt_state = carry
            index, k = inputs
            grads = jax.grad(loss)(logits, x_all[index], y_all[index], k)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(logits, updates), opt_state), None

        (logits, opt_state), _ = jax.lax.scan(step, (logits, opt_state), (order, jax.random.split(k_steps, steps)))
        weights = sample_weights(logits, k_test, 1)
        accuracy = jnp.mean(jnp.argmax(binary_logits([w[0] for w in weights], x_test), -1) == y_test)
        return (logits, opt_state), accuracy

    def run(key):
        logits = init_logits(jax.random.fold_in(key, 0), widths)
        return jax.lax.scan(
            lambda state, e: epoch(state, jax.random.fold_in(key, 1), e), (logits, optimizer.init(logits)), jnp.arange(epochs)
        )

    (logits, _), accuracy = jax.vmap(run)(keys)
    return logits, accuracy


def sample_weights(logits: list[jax.Array], key: jax.Array, count: int) -> list[jax.Array]:
    """``count`` configurations ``w = +-1`` drawn from ``P(w = +1) = sigmoid(theta)``."""
    keys = jax.random.split(key, len(logits))
    return [
        jnp.where(jax.random.uniform(k, (count,) + theta.shape) < jax.nn.sigmoid(theta), 1.0, -1.0)
        for k, theta in zip(keys, logits)
    ]


@functools.partial(jax.jit, static_argnames=("batch",))
def configuration_accuracy(weights: list[jax.Array], x: jax.Array, y: jax.Array, *, batch: int = 256) -> jax.Array:
    """Test accuracy of each of ``K`` weight configurations (leading axis), in batches."""
    accuracy = lambda ws: jnp.mean(jnp.argmax(binary_logits(ws, x), -1) == y)
    return jax.lax.map(accuracy, weights, batch_size=batch)


def weight_samples(
    training: BinaryTraining, dataset: Dataset, *, per_network: int, threshold: float, key: jax.Array,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``per_network`` configurations from every trained network and keeps those whose
    test accuracy reaches ``threshold``.

    Returns:
      ``(samples, accuracies)``: spins in {-1, +1} of shape ``(kept, N)`` (layers flattened in
      order, each row-major), and their test accuracies.
    """
    x, y = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)
    kept, accuracies = [], []
    seeds = training.logits[0].shape[0]
    for s in range(seeds):
        weights = sample_weights([t[s] for t in training.logits], jax.random.fold_in(key, s), per_network)
        accuracy = np.asarray(configuration_accuracy(weights, x, y))
        good = accuracy >= threshold
        flat = np.concatenate([np.asarray(w).reshape(per_network, -1) for w in weights], axis=1)
        kept.append(flat[good].astype(np.int8))
        accuracies.append(accuracy[good])
    return np.concatenate(kept), np.concatenate(accuracies)


def split_layers(samples: np.ndarray | jax.Array, widths: Sequence[int]) -> list:
    """Flattened configurations ``(K, N)`` back to their weight matrices ``[(K, a, b), ...]``."""
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    if samples.shape[-1] != sum(sizes):
        raise ValueError(f"configurations have {samples.shape[-1]} weights; widths {tuple(widths)} need {sum(sizes)}")
    bounds = np.cumsum([0] + sizes)
    return [samples[..., lo:hi].reshape(samples.shape[:-1] + (a, b)) for lo, hi, a, b in zip(bounds[:-1], bounds[1:], widths[:-1], widths[1:])]


def permute_hidden_units(samples: np.ndarray, widths: Sequence[int], key: jax.Array, *, copies: int = 1) -> np.ndarray:
    """``copies`` relabellings of every configuration, each with the units of every hidden layer
    in an independent uniformly random order (the incoming column and the outgoing row of a
    unit move together, so every copy computes the same function as the original).

    Independently trained networks come out with their hidden units in random order: the
    initialisation is exchangeable across units and training treats units alike, so the
    distribution of pooled solutions is invariant under these relabellings. Averaging the
    samples over them (Rao-Blackwellisation) keeps that distribution and removes the part of
    the moments' sampling noise that comes from the finite number of networks, which is large
    when each network is nearly deterministic. Inputs and outputs keep their order.
    """
    layers = split_layers(jnp.asarray(samples), widths)
    hidden = widths[1:-1]

    def relabel(weights, key):
        orders = [jax.random.permutation(k, w) for k, w in zip(jax.random.split(key, len(hidden)), hidden)]
        out = []
        for l, w in enumerate(weights):
            if l > 0:
                w = w[orders[l - 1], :]
            if l < len(hidden):
                w = w[:, orders[l]]
            out.append(w.reshape(-1))
        return jnp.concatenate(out)

    keys = jax.random.split(key, copies * samples.shape[0]).reshape(copies, samples.shape[0], -1)
    permuted = jax.jit(jax.vmap(jax.vmap(relabel)))([jnp.broadcast_to(w, (copies,) + w.shape) for w in layers], keys)
    return np.asarray(permuted).reshape(copies * samples.shape[0], -1).astype(samples.dtype)

