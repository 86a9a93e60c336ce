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


def _expectation_terms(entry, variance, m: int, k: int, dtype) -> tuple[jax.Array, jax.Array]:
    """``E[delta u]`` (``m x (m+k)``) and the upper triangle of ``E[delta delta]`` (``m(m+1)/2``)
    from readers of the covariance as output ``o`` sees it: ``entry(o, a, b)`` of the entry
    ``(a, b)`` and ``variance(o, a)`` of ``(a, a)`` (``o`` numbers the entries of ``E[delta u]``,
    row-major, then those of the triangle; index arrays broadcast)."""
    n = m + k
    v = _output_weights(m, k, dtype)
    # I3[i, j, c] with (1, 2, 3) = (student i, any field j, any field c)
    i, j, f = np.ogrid[:m, :n, :n]
    o = i * n + j
    e_delta_u = i3(variance(o, i), entry(o, i, j), entry(o, i, f), entry(o, j, f), variance(o, f)) @ v / m
    # I4[i, j, c, e] with (1, 2, 3, 4) = (student i, student j, field c, field e), i <= j and c <= e
    rows, cols = np.triu_indices(m)
    first, second = np.triu_indices(n)
    i, j, f, e = rows[:, None], cols[:, None], first[None, :], second[None, :]
    o = m * n + np.arange(len(rows))[:, None]
    i4_upper = i4(variance(o, i), entry(o, i, j), entry(o, i, f), entry(o, i, e), variance(o, j), entry(o, j, f), entry(o, j, e),
                  variance(o, f), entry(o, f, e), variance(o, e))
    weights = v[first] * v[second] * np.where(first == second, 1.0, 2.0)
    return e_delta_u, i4_upper @ weights / m**2


def _symmetric(upper: jax.Array, m: int) -> jax.Array:
    """The symmetric ``m x m`` matrix of an upper triangle laid along the leading axis (further axes kept)."""
    rows, cols = np.triu_indices(m)
    index = np.zeros((m, m), int)
    index[rows, cols] = index[cols, rows] = np.arange(len(rows))
    return upper[index]


def expectations(op: OrderParameters) -> tuple[jax.Array, jax.Array]:
    """``E[delta_i u_j]`` (``m x (m+k)``, fields ``u = (lambda, lambda*)``) and ``E[delta_i delta_j]``.

    ``I3`` is broadcast over every ``(i, j, c)``. ``I4(i, j, c, e)`` is symmetric under
    ``i <-> j`` and under ``c <-> e``, so it is evaluated on the upper triangles of both pairs
    only (3.3x fewer of the integrals that dominate the cost at m = k = 8), the off-diagonal
    ``(c, e)`` terms counted twice, and ``E[delta delta]`` is filled in symmetrically.
    """
    m, k = op.M.shape
    c = covariance(op)
    diag = jnp.diag(c)  # variances read from the diagonal: 5-20 % faster than from c itself (docs/benchmarks.md)
    e_delta_u, upper = _expectation_terms(lambda o, a, b: c[a, b], lambda o, a: diag[a], m, k, c.dtype)
    return e_delta_u, _symmetric(upper, m)


def expectations_jacobian(op: OrderParameters) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """The derivatives of :func:`expectations` by ``Q`` and ``M`` (every entry taken as
    independent): ``(d E[delta u] / dQ, d E[delta u] / dM)`` of shapes ``m x (m+k) x m x m`` and
    ``m x (m+k) x m x k``, and ``(d E[delta delta] / dQ, d E[delta delta] / dM)``, ``m x m x ...``.

    One reverse pass gives them all: each expectation reads its own copy of ``Q, M`` (through
    its own covariance), so the gradient of their sum with respect to the copies is the
    Jacobian, every ``I3`` and ``I4`` term differentiated once by its five or ten entries,
    where ``jax.jacfwd`` would carry every entry of ``Q, M`` through every term."""
    m, k = op.M.shape
    n, outputs = m + k, m * (m + k) + m * (m + 1) // 2
    copies = jax.tree.map(lambda x: jnp.broadcast_to(x, (outputs, *x.shape)), (op.Q, op.M))

    def total(copies):
        cs = jax.vmap(lambda q, mm: covariance(OrderParameters(q, mm, op.P)))(*copies)
        return sum(jnp.sum(x) for x in _expectation_terms(lambda o, a, b: cs[o, a, b], lambda o, a: cs[o, a, a], m, k, cs.dtype))

    split = lambda d: (d[: m * n].reshape(m, n, *d.shape[1:]), _symmetric(d[m * n :], m))
    (u_q, dd_q), (u_m, dd_m) = (split(d) for d in jax.grad(total)(copies))
    return (u_q, u_m), (dd_q, dd_m)


def generalisation_error(op: OrderParameters) -> jax.Array:
    """``eps_g = E[(y_hat - y)^2] / 2`` in closed form."""
    m, k = op.M.shape
    c = covariance(op)
    v = _output_weights(m, k, c.dtype)
    diag = jnp.diag(c)
    return 0.5 * v @ i2(diag[:, None], c, diag[None, :]) @ v
