"""Mode-decomposed networks and their baselines as pure functions over pytrees.

Every weight layer ``l`` of an MDL network is

.. math:: W^l = \\hat\\xi^l \\, \\mathrm{diag}(\\sigma^l) \\, (\\xi^{l+1})^T
          \\qquad (N_l \\times N_{l+1}, \\text{ letter Eq. (1)}),

and the forward pass never forms ``W``: ``z = ((h @ xi_hat) * sigma) @ xi.T`` costs
``O(p (N_l + N_{l+1}))`` per example. Parameters are plain dicts of lists of arrays, one
layout per entry of the table of methods (``_methods``):

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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdl_jax._methods import ModeLayer, ModeMask, Params, get_method, init_scale
from mdl_jax._spec import NetworkSpec, SpecError

__all__ = ["ModeLayer", "Params", "init_scale", "init_params", "mode_layers", "mode_map",
           "effective_weights", "apply", "penalty", "param_count", "Flops", "matmul_flops", "check_params"]


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
    return get_method(spec.method).init(key, spec, dtype)


def mode_layers(params: Params, spec: NetworkSpec, mode_mask: ModeMask = None) -> list[ModeLayer]:
    """The ``(xi_hat, sigma, xi)`` of every layer, with masked modes' sigma set to zero.

    For ``svd`` the importance is ``|s|``; for ``two_factor`` it is one.
    """
    method = get_method(spec.method)
    if not method.has_modes:
        raise SpecError(f"method {spec.method!r} has no modes")
    layers = method.mode_layers(params, spec)
    if mode_mask is None:
        return layers
    return [layer._replace(sigma=layer.sigma * m) for layer, m in zip(layers, mode_mask)]


def mode_map(layer: ModeLayer, h: jax.Array, *, project=None) -> jax.Array:
    """``h @ W`` for ``W = xi_hat diag(sigma) xi^T``, as ``((h @ xi_hat) * sigma) @ xi^T``.

    ``O(p (N_l + N_{l+1}))`` per example; ``W`` is never formed. The one implementation of
    the mode map, used by :func:`apply` and by every mode-decomposed layer: ``project(h,
    xi_hat)`` replaces the projection ``h @ xi_hat`` onto the modes (a convolution in
    :class:`mdl_jax.nn.ModeConv`).
    """
    z = h @ layer.xi_hat if project is None else project(h, layer.xi_hat)
    return (z * layer.sigma) @ layer.xi.T


def mode_importance_parts(layer: ModeLayer, mask: jax.Array | None = None) -> jax.Array:
    """The three terms of tau, ``(gamma ||xi_a||, gamma ||xi_hat_a||, |sigma_a|)``, as ``(3, p)``.

    ``gamma = sum_a |sigma_a| / sum_a (||xi_a|| + ||xi_hat_a||)`` puts the pattern norms on the
    scale of the importances. Modes outside ``mask`` (a run's 0/1 mode mask for this layer)
    count as absent: all three terms zero, and left out of gamma.
    """
    present = jnp.ones_like(layer.sigma) if mask is None else mask.astype(layer.sigma.dtype)
    xi_norm = jnp.linalg.norm(layer.xi, axis=0) * present
    xi_hat_norm = jnp.linalg.norm(layer.xi_hat, axis=0) * present
    gamma = jnp.sum(jnp.abs(layer.sigma) * present) / jnp.sum(xi_norm + xi_hat_norm)
    return jnp.stack([gamma * xi_norm, gamma * xi_hat_norm, jnp.abs(layer.sigma) * present])


def mode_importance(layer: ModeLayer, mask: jax.Array | None = None) -> jax.Array:
    """``tau_a = gamma ||xi_a|| + gamma ||xi_hat_a|| + |sigma_a|`` (letter, Fig. 3), shape ``(p,)``
    (zero for modes outside ``mask``); see :func:`mode_importance_parts`."""
    return jnp.sum(mode_importance_parts(layer, mask), axis=0)


def effective_weights(params: Params, spec: NetworkSpec, mode_mask: ModeMask = None) -> list[jax.Array]:
    """The weight matrices ``W^l`` (``N_l x N_{l+1}``) the parameters stand for (Eq. 1)."""
    method = get_method(spec.method)
    if not method.has_modes:
        return method.weights(params, spec)
    return [(xh * sg) @ xi.T for xh, sg, xi in mode_layers(params, spec, mode_mask)]


def apply(
    params: Params, x: jax.Array, *, spec: NetworkSpec, mode_mask: ModeMask = None,
    return_hidden: bool = False, key: jax.Array | None = None,
) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Forward pass: ReLU hidden layers, linear output logits (softmax lives in the loss).

    Args:
      params: parameters of ``spec``.
      x: inputs ``(..., N_0)``.
      spec: the architecture.
      mode_mask: optional 0/1 vector per layer; masked modes are switched off. Runs trained
        by :func:`mdl_jax.train` hold zeros in their inactive modes, so their parameters
        evaluate correctly without it.
      return_hidden: also return the hidden-layer activations ``h^1 .. h^{L-1}``.
      key: the noise of a stochastic method's training pass (``binary``); ignored otherwise.

    Returns:
      logits ``(..., N_L)``, and the list of hidden activations if ``return_hidden``.
    """
    method = get_method(spec.method)
    if method.apply is not None:
        if return_hidden:
            raise SpecError(f"method {spec.method!r} has its own apply, which returns no hidden layers")
        if method.stochastic and key is not None:
            return method.apply(params, x, spec, mode_mask, key=key)
        return method.apply(params, x, spec, mode_mask)
    if method.has_modes:
        maps = [lambda h, f=f: mode_map(f, h) for f in mode_layers(params, spec, mode_mask)]
    else:
        maps = [lambda h, w=w: h @ w for w in method.weights(params, spec)]
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
    """Training penalty added to the loss (the method's own; zero for most methods).

    ``svd``: :math:`\\sum_l [ w_o (\\|U_l^T U_l - I\\|_F^2 + \\|V_l^T V_l - I\\|_F^2) / r_l^2
    + w_s \\|s_l\\|_1 / \\|s_l\\|_2 ]` over active modes (method notes, section 3).
    """
    method = get_method(spec.method)
    if method.penalty is None:
        return jnp.zeros((), jax.tree.leaves(params)[0].dtype)
    return method.penalty(params, spec, mode_mask, orthogonality, sparsity)


def param_count(spec: NetworkSpec) -> int:
    """Number of trainable scalars (active modes only).

    784-100-100-10 with p = 30: ``mdl`` 35,910 (40.2 % of ``bp``'s 89,400).
    """
    return get_method(spec.method).param_count(spec)


class Flops(NamedTuple):
    forward: int  # matrix-product FLOPs of one example's forward pass
    training: int  # of one example's training step: forward, and backward to every trainable factor


def matmul_flops(spec: NetworkSpec) -> Flops:
    """Matrix-product FLOPs per example of an MLP ``spec`` (counted from the shapes; the
    elementwise work, O(N) per layer, is left out).

    A plain layer ``N_l -> N_{l+1}`` costs ``2 N_l N_{l+1}`` forward, the same again for the
    weight gradient and again for the input gradient (not in the first layer). A mode layer
    costs ``2 p (N_l + N_{l+1})`` forward (``h @ xi_hat``, then ``@ xi^T``; ``W`` is never
    formed) and, backward, ``4 p N_{l+1}`` for ``xi`` and the gradient through it, ``2 p N_l``
    for ``xi_hat`` and ``2 p N_l`` for the input gradient (not in the first layer).

    784-100-100-10: ``bp`` 178,800 forward, 379,600 training; ``mdl`` at p = 30: 71,640 and
    167,880 (0.44x).
    """
    method = get_method(spec.method)
    if method.apply is not None:
        raise SpecError(f"method {spec.method!r} has its own forward pass: count its FLOPs from its model")
    forward = training = 0
    for l, (n_in, n_out) in enumerate(zip(spec.widths[:-1], spec.widths[1:])):
        input_grad = l > 0
        if method.has_modes:
            p = spec.modes[l]
            layer_forward = 2 * p * (n_in + n_out)
            backward = 4 * p * n_out + 2 * p * n_in * (1 + input_grad)
        else:
            layer_forward = 2 * n_in * n_out
            backward = layer_forward * (1 + input_grad)
        forward, training = forward + layer_forward, training + layer_forward + backward
    return Flops(forward, training)


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
