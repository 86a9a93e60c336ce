"""Teacher and student committee machines with a mode-decomposed first layer (the letter's
Eqs. 4-5), their draws (Eq. 6) and their order parameters ``Q, M, P``."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Committee(NamedTuple):
    """First layer of a committee machine, ``W = xi diag(sigma) xi_hat^T``."""

    xi_hat: jax.Array  # (d, p) upstream patterns
    sigma: jax.Array  # (p,) importances
    xi: jax.Array  # (k, p) downstream patterns

    def weights(self) -> jax.Array:
        """``W`` of shape ``(k, d)``."""
        return (self.xi * self.sigma) @ self.xi_hat.T


class OrderParameters(NamedTuple):
    Q: jax.Array  # (m, m) student-student
    M: jax.Array  # (m, k) student-teacher
    P: jax.Array  # (k, k) teacher-teacher, fixed


def modes_for_load(alpha: float, d: int) -> int:
    """``p = floor(alpha ln d)``, the number of modes at mode load ``alpha``."""
    p = math.floor(alpha * math.log(d))
    if p < 1:
        raise ValueError(f"mode load alpha = {alpha} gives p = floor(alpha ln {d}) = {p} < 1 modes; raise alpha or d")
    return p


def init_teacher_student(
    key: jax.Array, d: int, p: int, k: int, *, dtype=None, nested: bool = False, redraw_above: float | None = None,
) -> tuple[Committee, Committee]:
    """Teacher and initial student: every factor entry i.i.d. ``N(0, (ln d)^(-1/3))``.

    The student shares the teacher's ``xi`` and ``sigma`` and draws its own ``xi_hat``. With
    ``nested``, mode ``a`` of every factor comes from ``fold_in(factor key, a)`` alone, so
    committees drawn from one key with ``p' < p`` modes are the first ``p'`` modes of the
    ``p``-mode one (teachers shared across mode loads). ``redraw_above``: the authors' rule,
    the student is redrawn once (from ``fold_in(key, 1)``) when
    ``(mean Q - mean P)^2 / 2 > redraw_above`` (they use 0.01).
    """
    scale = math.log(d) ** (-1.0 / 6.0)
    k_hat, k_sigma, k_xi, k_student = jax.random.split(key, 4)
    dtype = dtype or jnp.float32
    if nested:
        columns = lambda kk, rows: scale * jax.vmap(lambda a: jax.random.normal(jax.random.fold_in(kk, a), (rows,), dtype),
                                                    out_axes=1)(jnp.arange(p))
    else:
        columns = lambda kk, rows: scale * jax.random.normal(kk, (rows, p), dtype)
    teacher = Committee(columns(k_hat, d), columns(k_sigma, 1)[0], columns(k_xi, k))
    student = teacher._replace(xi_hat=columns(k_student, d))
    if redraw_above is not None:
        op = order_parameters(student.weights(), teacher.weights())
        redraw = (jnp.mean(op.Q) - jnp.mean(op.P)) ** 2 / 2 > redraw_above
        again = teacher._replace(xi_hat=columns(jax.random.fold_in(k_student, 1), d))
        student = jax.tree.map(lambda a, b: jnp.where(redraw, b, a), student, again)
    return teacher, student


def order_parameters(student_w: jax.Array, teacher_w: jax.Array) -> OrderParameters:
    """``Q, M, P`` of weights ``W`` (``m x d``) and ``W*`` (``k x d``)."""
    d = student_w.shape[1]
    return OrderParameters(student_w @ student_w.T / d, student_w @ teacher_w.T / d, teacher_w @ teacher_w.T / d)


def mode_coupling(committee: Committee) -> jax.Array:
    """``A = xi diag(sigma)^2 xi^T`` (``m x m``), the fixed metric of the student's updates."""
    return (committee.xi * committee.sigma**2) @ committee.xi.T


def covariance(op: OrderParameters) -> jax.Array:
    """Covariance ``[[Q, M], [M^T, P]]`` of the fields ``(lambda, lambda*)``."""
    return jnp.block([[op.Q, op.M], [op.M.T, op.P]])
