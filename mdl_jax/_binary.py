"""Binary-weight networks trained by local reparametrisation, and samples of their weights.

Every weight ``w = +-1`` has a trainable logit ``theta`` with ``P(w = +1) = sigmoid(theta)``,
mean ``mu = tanh(theta / 2)`` and variance ``1 - mu^2``. A layer's pre-activation is sampled
from its Gaussian, ``z = x mu + sqrt(x^2 (1 - mu^2)) eps`` (Shayer et al. 2018), so the loss is
differentiable in theta. Hidden units: ``f(z) = (max(0, z) + 0.1 min(0, z)) / sqrt(fan_in)``;
no biases; linear output logits, softmax cross-entropy (``effective-model-notes.md`` section 1).

The networks are the ``binary`` entry of the table of methods and train through the one
trainer and run driver like every other model: Adam (``weight_decay=0``, no learning-rate
halving) on the logits, the L2 penalty :data:`L2_PENALTY` in the loss, and a fresh noise key
for every step, ``fold_in(fold_in(fold_in(key, 2), epoch), step)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def init_logits(key: jax.Array, widths: Sequence[int], *, scale: float = 0.1, dtype=jnp.float32) -> list[jax.Array]:
    """Logits ``theta ~ N(0, scale^2)`` for every weight of every layer."""
    keys = jax.random.split(key, len(widths) - 1)
    return [scale * jax.random.normal(k, (a, b), dtype) for k, a, b in zip(keys, widths[:-1], widths[1:])]


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


#: The L2 penalty on the logits (``effective-model-notes.md`` section 1).
L2_PENALTY = 1e-5


def init_binary(key: jax.Array, spec, dtype) -> dict:
    """Parameters of the ``binary`` method: ``{"logits": [theta^l]}``, ``theta ~ N(0, 0.1^2)``."""
    return {"logits": init_logits(key, spec.widths, dtype=dtype)}


def apply_binary(params: dict, x: jax.Array, spec=None, mode_mask=None, *, key: jax.Array | None = None) -> jax.Array:
    """The ``binary`` method's forward pass: with ``key``, every pre-activation sampled from its
    local Gaussian (training); without, the most probable configuration ``w = sign(theta)``
    (the trainer's evaluation)."""
    logits = params["logits"]
    x = x.astype(logits[0].dtype)
    if key is not None:
        return sampled_logits(logits, x, key)
    return binary_logits([jnp.where(t >= 0, 1.0, -1.0).astype(t.dtype) for t in logits], x)


def l2_penalty(params: dict, spec, mode_mask, orthogonality: float, sparsity: float) -> jax.Array:
    """``L2_PENALTY * sum theta^2``, added to the training loss."""
    return L2_PENALTY * sum(jnp.sum(t**2) for t in params["logits"])


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
    logits: list[jax.Array], dataset: Dataset, *, per_network: int, threshold: float, key: jax.Array, min_kept: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``per_network`` configurations from every trained network (``logits``: the
    ``binary`` method's ``params["logits"]`` with a leading network axis) and keeps those whose
    test accuracy reaches ``threshold``: at least ``min_kept`` of them, else a ``ValueError``.

    Returns:
      ``(samples, accuracies)``: spins in {-1, +1} of shape ``(kept, N)`` (layers flattened in
      order, each row-major), and their test accuracies.
    """
    x, y = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)
    kept, accuracies = [], []
    for s in range(logits[0].shape[0]):
        weights = sample_weights([t[s] for t in logits], jax.random.fold_in(key, s), per_network)
        accuracy = np.asarray(configuration_accuracy(weights, x, y))
        good = accuracy >= threshold
        flat = np.concatenate([np.asarray(w).reshape(per_network, -1) for w in weights], axis=1)
        kept.append(flat[good].astype(np.int8))
        accuracies.append(accuracy[good])
    samples = np.concatenate(kept)
    if len(samples) < min_kept:
        raise ValueError(f"only {len(samples)} samples reach accuracy {threshold} (at least {min_kept} wanted): "
                         "lower the threshold, or train the networks longer")
    return samples, np.concatenate(accuracies)


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

