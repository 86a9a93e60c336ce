"""Mode-decomposed Flax layers, for any Flax model.

Flax **NNX**, not Linen. An NNX module is built eagerly from an explicit key, so a
:class:`ModeDense` of weight layer ``l`` draws its factors exactly as :func:`mdl_jax.init_params`
does: column ``a`` of factor ``f`` from ``fold_in(fold_in(fold_in(key, l), f), a)``, scale
``(N ln N)^(-1/6)`` of its fan-in. A Linen module gets its parameter keys from its path in the
model, which would make that impossible. ``nnx.split`` then turns any model into a static graph
definition and a plain state pytree, so the pure ``(init, apply)`` pair the trainer wants is two
lines (:func:`flax_method`): ``jax.vmap`` over keys gives one model per seed, and the mode mask
is a call argument (traced data), so runs with different ``p`` share one compilation.

Both layers compute through :func:`mdl_jax.mode_map`, the one implementation of the mode map:
:class:`ModeDense` with a matrix product as the projection onto the modes, :class:`ModeConv`
with a convolution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mdl_jax._methods import Method, ModeLayer, mode_factors
from mdl_jax._models import mode_map
from mdl_jax._spec import NetworkSpec


class _ModeFactors(nnx.Module):
    """``xi_hat (fan_in, p)``, ``sigma (p,)``, ``xi (features, p)`` of weight layer ``layer``."""

    def __init__(self, fan_in: int, features: int, modes: int, *, key: jax.Array, layer: int, use_bias: bool, dtype):
        factors = mode_factors(key, layer, fan_in, features, modes, dtype)  # exactly init_params' draws
        self.layer = layer
        self.xi_hat, self.sigma, self.xi = (nnx.Param(f) for f in factors)
        self.bias = nnx.Param(jnp.zeros(features, dtype)) if use_bias else None

    def mode_layer(self, mode_mask: jax.Array | None = None) -> ModeLayer:
        """The layer's modes (``sigma`` times the mask, if one is given)."""
        sigma = self.sigma[...] if mode_mask is None else self.sigma[...] * mode_mask
        return ModeLayer(self.xi_hat[...], sigma, self.xi[...])

    def _add_bias(self, y: jax.Array) -> jax.Array:
        return y if self.bias is None else y + self.bias[...]


class ModeDense(_ModeFactors):
    """A dense layer with kernel ``W = xi_hat diag(sigma) xi^T`` (letter, Eq. 1), applied as
    ``((x @ xi_hat) * sigma) @ xi^T``; ``W`` is never formed.

    Args:
      in_features: ``N_l``.
      features: ``N_{l+1}``.
      modes: ``p``.
      key: the model's root key (the same for every layer of a model).
      layer: the weight layer's index ``l``, which selects its keys.
      use_bias: add a bias (zero at the start; not part of the modes).
    """

    def __init__(self, in_features: int, features: int, modes: int, *, key: jax.Array, layer: int = 0,
                 use_bias: bool = False, dtype=jnp.float32):
        super().__init__(in_features, features, modes, key=key, layer=layer, use_bias=use_bias, dtype=dtype)

    def __call__(self, x: jax.Array, mode_mask: jax.Array | None = None) -> jax.Array:
        return self._add_bias(mode_map(self.mode_layer(mode_mask), x))


class ModeConv(_ModeFactors):
    """A convolution whose kernel ``(kh, kw, c_in, c_out)`` is ``xi_hat diag(sigma) xi^T`` with
    ``xi_hat: (kh kw c_in, p)`` and ``xi: (c_out, p)``.

    Applied as a convolution with ``p`` output channels (the kernel ``xi_hat``), a scale by
    ``sigma`` and a 1x1 map to ``c_out``: ``kh kw c_in p + p c_out`` multiplications per
    position instead of ``kh kw c_in c_out``. Inputs are ``(..., H, W, c_in)`` (NHWC).
    """

    def __init__(self, in_features: int, features: int, kernel_size: Sequence[int], modes: int, *, key: jax.Array,
                 layer: int = 0, strides: int | Sequence[int] = 1, padding: str = "SAME", use_bias: bool = False,
                 dtype=jnp.float32):
        self.kernel_size = tuple(kernel_size)
        self.strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        self.padding = padding
        fan_in = self.kernel_size[0] * self.kernel_size[1] * in_features
        super().__init__(fan_in, features, modes, key=key, layer=layer, use_bias=use_bias, dtype=dtype)

    def _project(self, x: jax.Array, xi_hat: jax.Array) -> jax.Array:
        kernel = xi_hat.reshape(*self.kernel_size, -1, xi_hat.shape[-1])
        return jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def __call__(self, x: jax.Array, mode_mask: jax.Array | None = None) -> jax.Array:
        return self._add_bias(mode_map(self.mode_layer(mode_mask), x, project=self._project))


def mode_modules(model: nnx.Module) -> list[_ModeFactors]:
    """The :class:`ModeDense` and :class:`ModeConv` layers of ``model``, by layer index."""
    found = [m for _, m in nnx.iter_modules(model) if isinstance(m, _ModeFactors)]
    return sorted(found, key=lambda m: m.layer)


def flax_method(name: str, build: Callable[[jax.Array, NetworkSpec, object], nnx.Module], *,
                modes: bool = True, description: str = "") -> Method:
    """A table entry (:class:`mdl_jax.Method`) for a Flax NNX model, ready for
    :func:`mdl_jax.register_method`, after which it trains through :func:`mdl_jax.train`,
    ``mdl-jax train`` and the figure scripts like the letter's MLPs.

    ``build(key, spec, dtype)`` makes the model; its mode layers take ``layer = l`` for the
    ``l``-th entry of ``spec.modes``, and its ``__call__(x, mode_mask)`` passes ``mode_mask[l]``
    to layer ``l``. Parameters are the model's ``nnx.Param`` state as a plain nested dict.
    ``modes=False`` registers a model without mode layers (a plain baseline, ``modes=None``).
    """

    @functools.lru_cache(maxsize=None)
    def graph(spec: NetworkSpec, dtype) -> tuple:
        return nnx.split(nnx.eval_shape(lambda: build(jax.random.PRNGKey(0), spec, dtype)))

    def dtype_of(params):
        return jnp.dtype(jax.tree.leaves(params)[0].dtype)

    def merge(params, spec: NetworkSpec) -> nnx.Module:
        graphdef, state = graph(spec, dtype_of(params))
        state = jax.tree.map(lambda a: a, state)  # a copy: replace_by_pure_dict fills it in place
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)

    def init(key, spec: NetworkSpec, dtype):
        return nnx.to_pure_dict(nnx.state(build(key, spec, jnp.dtype(dtype)), nnx.Param))

    def param_count(spec: NetworkSpec) -> int:
        abstract = nnx.eval_shape(lambda: build(jax.random.PRNGKey(0), spec, jnp.float32))
        return sum(a.size for a in jax.tree.leaves(nnx.state(abstract, nnx.Param)))

    def apply(params, x, spec: NetworkSpec, mode_mask):
        return merge(params, spec)(x, mode_mask)

    def mode_layers(params, spec: NetworkSpec) -> list[ModeLayer]:
        return [m.mode_layer() for m in mode_modules(merge(params, spec))]

    def mask_params(params, spec: NetworkSpec, mask):
        model = merge(params, spec)
        for module in mode_modules(model):
            m = mask[module.layer]
            for factor in (module.xi_hat, module.sigma, module.xi):
                factor[...] = factor[...] * m.astype(factor[...].dtype)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    if not modes:
        return Method(name, init, param_count, apply=apply, description=description)
    return Method(name, init, param_count, mode_layers=mode_layers, apply=apply, mask_params=mask_params,
                  description=description)
