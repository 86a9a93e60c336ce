"""Mode-decomposed networks and their baselines as pure functions over pytrees.

Every weight layer ``l`` of an MDL network is

.. math:: W^l = \\hat\\xi^l \\, \\mathrm{diag}(\\sigma^l) \\, (\\xi^{l+1})^T
          \\qquad (N_l \\times N_{l+1}, \\text{ letter Eq. (1)}),

and the forward pass never forms ``W``: ``z = ((h @ xi_hat) * sigma) @ xi.T`` costs
``O(p (N_l + N_{l+1}))`` per example. Parameters are plain dicts of lists of arrays:

* ``mdl``:        ``{"xi_hat": [(N_l, p_l)], "sigma": [(p_l,)], "xi": [(N_{l+1}, p_l)]}``
* ``mdl_1l1p``:   ``{"patterns": [(N_l, p)] for l = 0..L, "sigma": [(p,)]}``; layer ``l`` uses
  ``xi_hat = patterns[l]`` and ``xi = patterns[l+1]``.
* ``two_factor``: ``{"xi_hat": [...], "xi": [...]}`` with ``sigma = 1``.
* ``bp``:         ``{"weights": [(N_l, N_{l+1})]}``.
* ``svd``:        ``{"u": [(N_l, r_l)], "s": [(r_l,)], "v": [(N_{l+1}, r_l)]}``, ``W = U diag(|s|) V^T``.

A *mode mask* (one 0/1 vector of length ``p_l`` per layer) switches modes off by multiplying
their importance: a masked mode contributes nothing to the output and receives zero gradient,
so runs with different ``p`` share one program by padding to ``p_max``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdl_jax._spec import NetworkSpec, SpecError

Params = dict[str, list[jax.Array]]
ModeMask = Sequence[jax.Array] | None

# Fixed salts for fold_in, so that a mode's initial value depends only on
# (seed, layer, factor, mode index), whatever p_max is.
_XI_HAT, _SIGMA, _XI, _PATTERN = 0, 1, 2, 3


class ModeLayer(NamedTuple):
    """One weight layer in mode form: ``W = xi_hat diag(sigma) xi^T``."""

    xi_hat: jax.Array  # (N_l, p)
    sigma: jax.Array  # (p,)
    xi: jax.Array  # (N_{l+1}, p)


def init_scale(fan_in: int) -> float:
    """Standard deviation ``s_l = (N_l ln N_l)^(-1/6)`` of every factor entry of layer l.

    A weight is then a sum of ``p`` products of three such entries, ``O(1/sqrt(N_l ln N_l))``
    up to the sum over modes (method notes, section 1).
    """
    if fan_in == 1:
        return 1.0
    return (fan_in * math.log(fan_in)) ** (-1.0 / 6.0)


def _mode_columns(key: jax.Array, rows: int, p: int, scale: float, dtype) -> jax.Array:
    """``(rows, p)`` Gaussian columns; column ``a`` is drawn from ``fold_in(key, a)`` alone."""
    keys = jax.vmap(lambda a: jax.random.fold_in(key, a))(jnp.arange(p))
    columns = jax.vmap(lambda k: jax.random.normal(k, (rows,), dtype))(keys)
    return scale * columns.T


def _factor_key(key: jax.Array, layer: int, factor: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, layer), factor)


def init_params(key: jax.Array, spec: NetworkSpec, *, dtype=jnp.float32) -> Params:
    """Draws initial parameters for ``spec``.

    Mode methods: every entry of ``xi_hat[l]``, ``sigma[l]``, ``xi[l]`` is i.i.d.
    ``N(0, s_l^2)`` (:func:`init_scale`); column ``a`` of each factor depends only on
    ``(key, layer, factor, a)``, so the first ``p`` modes of a ``p_max``-mode network equal a
    ``p``-mode network drawn with the same key. In ``mdl_1l1p`` pattern ``l`` takes the scale
    of the layer it feeds (the last pattern, the output layer's). ``bp`` draws
    ``W ~ N(0, 1/N_l)``; ``svd`` starts from the exact SVD of such a matrix, truncated to its
    rank, so its modes are not independent of ``p``.

    Args:
      key: a PRNG key.
      spec: the architecture.
      dtype: floating dtype of every parameter.

    Returns:
      The parameter pytree described in the module docstring.
    """
    widths, num_layers = spec.widths, spec.num_layers
    if spec.method == "bp":
        weights = [
            jax.random.normal(_factor_key(key, l, 0), (widths[l], widths[l + 1]), dtype)
            / math.sqrt(widths[l])
            for l in range(num_layers)
        ]
        return {"weights": weights}
    if spec.method == "svd":
        u, s, v = [], [], []
        for l, r in enumerate(spec.modes):
            w = jax.random.normal(_factor_key(key, l, 0), (widths[l], widths[l + 1]), dtype)
            left, singular, right_t = jnp.linalg.svd(w / math.sqrt(widths[l]), full_matrices=False)
            u.append(left[:, :r])
            s.append(singular[:r])
            v.append(right_t[:r].T)
        return {"u": u, "s": s, "v": v}
    if spec.method == "mdl_1l1p":
        p = spec.modes[0]
        patterns = [
            _mode_columns(
                _factor_key(key, l, _PATTERN), widths[l], p,
                init_scale(widths[min(l, num_layers - 1)]), dtype,
            )
            for l in range(num_layers + 1)
        ]
        sigma = [
            _mode_columns(_factor_key(key, l, _SIGMA), 1, p, init_scale(widths[l]), dtype)[0]
            for l in range(num_layers)
        ]
        return {"patterns": patterns, "sigma": sigma}
    params: Params = {"xi_hat": [], "sigma": [], "xi": []}
    for l, p in enumerate(spec.modes):
        s_l = init_scale(widths[l])
        params["xi_hat"].append(_mode_columns(_factor_key(key, l, _XI_HAT), widths[l], p, s_l, dtype))
        params["sigma"].append(_mode_columns(_factor_key(key, l, _SIGMA), 1, p, s_l, dtype)[0])
        params["xi"].append(_mode_columns(_factor_key(key, l, _XI), widths[l + 1], p, s_l, dtype))
    if spec.method == "two_factor":
        del params["sigma"]
    return params


def mode_layers(params: Params, spec: NetworkSpec, mode_mask: ModeMask = None) -> list[ModeLayer]:
    """The ``(xi_hat, sigma, xi)`` of every layer, with masked modes' sigma set to zero.

    For ``svd`` the importance is ``|s|``; for ``two_factor`` it is one.
    """
    if spec.method == "mdl":
        layers = [ModeLayer(*f) for f in zip(params["xi_hat"], params["sigma"], params["xi"])]
    elif spec.method == "mdl_1l1p":
        pat = params["patterns"]
        layers = [ModeLayer(pat[l], params["sigma"][l], pat[l + 1]) for l in range(spec.num_layers)]
    elif spec.method == "two_factor":
        layers = [
            ModeLayer(a, jnp.ones(a.shape[1], a.dtype), b)
            for a, b in zip(params["xi_hat"], params["xi"])
        ]
    elif spec.method == "svd":
        layers = [ModeLayer(u, jnp.abs(s), v) for u, s, v in zip(params["u"], params["s"], params["v"])]
    else:
        raise SpecError(f"method {spec.method!r} has no modes")
    if mode_mask is None:
        return layers
    return [layer._replace(sigma=layer.sigma * m) for layer, m in zip(layers, mode_mask)]


def effective_weights(params: Params, spec: NetworkSpec, mode_mask: ModeMask = None) -> list[jax.Array]:
    """The weight matrices ``W^l`` (``N_l x N_{l+1}``) the parameters stand for (Eq. 1)."""
    if spec.method == "bp":
        return list(params["weights"])
    return [(xh * sg) @ xi.T for xh, sg, xi in mode_layers(params, spec, mode_mask)]


def apply(
    params: Params, x: jax.Array, *, spec: NetworkSpec, mode_mask: ModeMask = None,
    return_hidden: bool = False,
) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Forward pass: ReLU hidden layers, linear output logits (softmax lives in the loss).

    Args:
      params: parameters of ``spec``.
      x: inputs ``(..., N_0)``.
      spec: the architecture.
      mode_mask: optional 0/1 vector per layer; masked modes are switched off.
      return_hidden: also return the hidden-layer activations ``h^1 .. h^{L-1}``.

    Returns:
      logits ``(..., N_L)``, and the list of hidden activations if ``return_hidden``.
    """
    if spec.method == "bp":
        maps = [lambda h, w=w: h @ w for w in params["weights"]]
    else:
        maps = [
            lambda h, f=f: ((h @ f.xi_hat) * f.sigma) @ f.xi.T
            for f in mode_layers(params, spec, mode_mask)
        ]
    dtype = jax.tree.leaves(params)[0].dtype
    h, hidden = x.astype(dtype), []
    for layer_map in maps[:-1]:
        h = jax.nn.relu(layer_map(h))
        hidden.append(h)
    logits = maps[-1](h)
    return (logits, hidden) if return_hidden else logits


def penalty(
    params: Params, spec: NetworkSpec, mode_mask: ModeMask = None, *,
    orthogonality: float = 30.0, sparsity: float = 1.0,
) -> jax.Array:
    """Training penalty added to the loss; non-zero only for ``svd``.

    .. math:: \\sum_l \\Big[ w_o \\frac{\\|U_l^T U_l - I\\|_F^2 + \\|V_l^T V_l - I\\|_F^2}{r_l^2}
              + w_s \\frac{\\|s_l\\|_1}{\\|s_l\\|_2} \\Big]

    (method notes, section 3). Masked modes are left out and ``r_l`` counts active ones.
    """
    if spec.method != "svd":
        return jnp.zeros((), jax.tree.leaves(params)[0].dtype)
    mask = mode_mask if mode_mask is not None else [jnp.ones_like(s) for s in params["s"]]
    total = 0.0
    for u, s, v, m in zip(params["u"], params["s"], params["v"], mask):
        rank = jnp.sum(m)
        eye = jnp.diag(m)
        ortho = sum(jnp.sum(((a * m).T @ (a * m) - eye) ** 2) for a in (u, v)) / rank**2
        sparse = jnp.sum(jnp.abs(s) * m) / jnp.sqrt(jnp.sum(s**2 * m))
        total = total + orthogonality * ortho + sparsity * sparse
    return total


def param_count(spec: NetworkSpec) -> int:
    """Number of trainable scalars (active modes only).

    784-100-100-10 with p = 30: ``mdl`` 35,910 (40.2 % of ``bp``'s 89,400).
    """
    pairs = list(zip(spec.widths[:-1], spec.widths[1:]))
    if spec.method == "bp":
        return sum(a * b for a, b in pairs)
    if spec.method == "mdl_1l1p":
        return spec.modes[0] * (sum(spec.widths) + spec.num_layers)
    per_mode_sigma = 0 if spec.method == "two_factor" else 1
    return sum(p * (a + b + per_mode_sigma) for p, (a, b) in zip(spec.modes, pairs))


def check_params(params: Params, spec: NetworkSpec) -> None:
    """Raises :class:`SpecError` unless ``params`` has exactly the shapes ``spec`` implies.

    Catches parameters loaded for another architecture, and layers whose widths do not
    chain (the output width of layer l must be the input width of layer l+1).
    """
    expected = jax.eval_shape(lambda k: init_params(k, spec), jax.random.PRNGKey(0))
    if set(params) != set(expected):
        raise SpecError(
            f"parameters have fields {sorted(params)}, but method {spec.method!r} needs "
            f"{sorted(expected)}"
        )
    for name, arrays in expected.items():
        if len(params[name]) != len(arrays):
            raise SpecError(
                f"{name!r} has {len(params[name])} layers, the widths {list(spec.widths)} need "
                f"{len(arrays)}"
            )
        for l, (got, want) in enumerate(zip(params[name], arrays)):
            if tuple(got.shape) != tuple(want.shape):
                raise SpecError(
                    f"{name}[{l}] has shape {tuple(got.shape)}, expected {tuple(want.shape)} for "
                    f"widths {list(spec.widths)} and modes {list(spec.modes)}: the widths do not "
                    "chain or the parameters belong to another architecture"
                )
