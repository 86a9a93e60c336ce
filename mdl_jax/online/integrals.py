"""Closed-form Gaussian integrals of erf units (Saad & Solla 1995; ``mdl-method-notes.md``
section 5): ``I2, I3, I4`` and the expectations of the letter's mean-field ODE, and the
generalisation error ``eps_g`` of order parameters ``Q, M, P``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax.online.committee import OrderParameters, covariance


def g(u: jax.Array) -> jax.Array:
    """The transfer function ``erf(u / sqrt 2)``."""
    return jax.scipy.special.erf(u / math.sqrt(2.0))


def g_prime(u: jax.Array) -> jax.Array:
    return math.sqrt(2.0 / math.pi) * jnp.exp(-(u**2) / 2)


def _asin(x):
    return jnp.arcsin(jnp.clip(x, -1.0, 1.0))


def i2(c11, c12, c22):
    """``E[g(u_1) g(u_2)]`` for fields of covariance entries ``c``."""
    return (2 / math.pi) * _asin(c12 / jnp.sqrt((1 + c11) * (1 + c22)))


def i3(c11, c12, c13, c23, c33):
    """``E[g'(u_1) u_2 g(u_3)]``."""
    lam3 = (1 + c11) * (1 + c33) - c13**2
    return (2 / math.pi) * (c23 * (1 + c11) - c12 * c13) / ((1 + c11) * jnp.sqrt(lam3))


def i4(c11, c12, c13, c14, c22, c23, c24, c33, c34, c44):
    """``E[g'(u_1) g'(u_2) g(u_3) g(u_4)]``."""
    lam4 = (1 + c11) * (1 + c22) - c12**2
    lam0 = lam4 * c34 - c23 * c24 * (1 + c11) - c13 * c14 * (1 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    lam1 = lam4 * (1 + c33) - c23**2 * (1 + c11) - c13**2 * (1 + c22) + 2 * c12 * c13 * c23
    lam2 = lam4 * (1 + c44) - c24**2 * (1 + c11) - c14**2 * (1 + c22) + 2 * c12 * c14 * c24
    return 4 / (math.pi**2 * jnp.sqrt(lam4)) * _asin(lam0 / jnp.sqrt(lam1 * lam2))


def _output_weights(m: int, k: int, dtype) -> jax.Array:
    """``v`` with ``y_hat - y = sum_c v_c g(u_c)``: ``1/m`` on students, ``-1/k`` on teachers."""
    return jnp.concatenate([jnp.full(m, 1.0 / m, dtype), jnp.full(k, -1.0 / k, dtype)])


def expectations(op: OrderParameters) -> tuple[jax.Array, jax.Array]:
    """``E[delta_i u_j]`` (``m x (m+k)``, fields ``u = (lambda, lambda*)``) and ``E[delta_i delta_j]``.

    ``I3`` is broadcast over every ``(i, j, c)``. ``I4(i, j, c, e)`` is symmetric under
    ``i <-> j`` and under ``c <-> e``, so it is evaluated on the upper triangles of both pairs
    only (3.3x fewer of the integrals that dominate the cost at m = k = 8), the off-diagonal
    ``(c, e)`` terms counted twice, and ``E[delta delta]`` is filled in symmetrically.
    """
    m, k = op.M.shape
    c = covariance(op)
    v = _output_weights(m, k, c.dtype)
    diag = jnp.diag(c)
    s = slice(0, m)
    # I3[i, j, c] with (1, 2, 3) = (student i, any field j, any field c)
    i3_all = i3(diag[s][:, None, None], c[s][:, :, None], c[s][:, None, :], c[None, :, :], diag[None, None, :])
    e_delta_u = jnp.einsum("ijc,c->ij", i3_all, v) / m
    # I4[i, j, c, e] with (1, 2, 3, 4) = (student i, student j, field c, field e), i <= j and c <= e
    rows, cols = np.triu_indices(m)
    first, second = np.triu_indices(m + k)
    i, j, f, e = rows[:, None], cols[:, None], first[None, :], second[None, :]
    i4_upper = i4(diag[i], c[i, j], c[i, f], c[i, e], diag[j], c[j, f], c[j, e], diag[f], c[f, e], diag[e])
    weights = v[first] * v[second] * np.where(first == second, 1.0, 2.0)
    upper = jnp.zeros((m, m), c.dtype).at[rows, cols].set(i4_upper @ weights / m**2)
    return e_delta_u, upper + jnp.triu(upper, 1).T


def generalisation_error(op: OrderParameters) -> jax.Array:
    """``eps_g = E[(y_hat - y)^2] / 2`` in closed form."""
    m, k = op.M.shape
    c = covariance(op)
    v = _output_weights(m, k, c.dtype)
    diag = jnp.diag(c)
    return 0.5 * v @ i2(diag[:, None], c, diag[None, :]) @ v
