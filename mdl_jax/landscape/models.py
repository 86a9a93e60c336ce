"""Ising models of binary weight configurations, their moments, and test models."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Ising(NamedTuple):
    J: jax.Array  # (N, N) symmetric couplings, zero diagonal
    h: jax.Array  # (N,) fields


def exact_moments(model: Ising) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Magnetisations, pair moments and ``ln Z`` by enumerating all ``2^N`` states (N <= 20)."""
    n = model.h.shape[0]
    states = 1 - 2 * ((jnp.arange(2**n)[:, None] >> jnp.arange(n)) & 1).astype(model.h.dtype)
    log_weights = 0.5 * jnp.einsum("si,ij,sj->s", states, model.J, states) + states @ model.h
    log_z = jax.scipy.special.logsumexp(log_weights)
    p = jnp.exp(log_weights - log_z)
    return p @ states, jnp.einsum("s,si,sj->ij", p, states, states), log_z


def sample_moments(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Means and second moments ``<s_i s_j>`` of ``(n, N)`` samples in {-1, +1}."""
    samples = jnp.asarray(samples, jnp.result_type(float))
    return samples.mean(0), samples.T @ samples / samples.shape[0]


@jax.jit  # one program per shape: called eagerly, its operations would compile one by one
def connected_moments(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Means and connected correlations ``<s_i s_j> - <s_i><s_j>`` of ``(n, N)`` samples."""
    mean, second = sample_moments(samples)
    return mean, second - jnp.outer(mean, mean)


@jax.jit
def moment_errors(samples, reference) -> tuple[jax.Array, jax.Array]:
    """RMS differences of the means and of the off-diagonal connected correlations between two
    sets of samples (e.g. model vs data). Either may instead be given as its
    :func:`connected_moments`, so that the moments of a large data set are computed once."""
    (m1, c1), (m2, c2) = (x if isinstance(x, tuple) else connected_moments(x) for x in (samples, reference))
    off = 1.0 - jnp.eye(m1.shape[0], dtype=m1.dtype)
    return jnp.sqrt(jnp.mean((m1 - m2) ** 2)), jnp.sqrt(jnp.sum(((c1 - c2) * off) ** 2) / jnp.sum(off))


def _independent_model(mean: jax.Array) -> Ising:
    """No couplings, fields ``atanh(m)``: the independent spins with the data's means (clipped
    to |m| <= 0.99, so that frozen spins get a finite field)."""
    n = mean.shape[0]
    return Ising(jnp.zeros((n, n), mean.dtype), jnp.arctanh(jnp.clip(mean, -0.99, 0.99)))


def random_ising(key: jax.Array, n: int, *, coupling: float, field: float, dtype=jnp.float64) -> Ising:
    """A dense Ising model with Gaussian couplings ``N(0, coupling^2)`` and fields ``N(0, field^2)``."""
    kj, kh = jax.random.split(key)
    upper = jnp.triu(coupling * jax.random.normal(kj, (n, n), dtype), 1)
    return Ising(upper + upper.T, field * jax.random.normal(kh, (n,), dtype))


def tree_ising(key: jax.Array, n: int, *, coupling: float, field: float, dtype=jnp.float64) -> Ising:
    """An Ising model on a random tree (each spin i > 0 coupled to one earlier spin)."""
    kp, kj, kh = jax.random.split(key, 3)
    parents = np.asarray(jax.random.randint(kp, (n - 1,), 0, np.arange(1, n)))
    weights = coupling * jax.random.normal(kj, (n - 1,), dtype)
    J = jnp.zeros((n, n), dtype).at[np.arange(1, n), parents].set(weights)
    return Ising(J + J.T, field * jax.random.normal(kh, (n,), dtype))
