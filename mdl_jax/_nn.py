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
import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mdl_jax._methods import Method, ModeLayer, mode_factors
from mdl_jax._models import mode_map
from mdl_jax._spec import NetworkSpec, SpecError


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
    position instead of ``kh kw c_in c_out``. Inputs are ``(..., H, W, c_in)`` (NHWC). The
    convolution runs as image patches times ``xi_hat`` (:func:`conv_as_matmul`).
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
        return conv_as_matmul(x, xi_hat, self.kernel_size, self.strides, self.padding)

    def __call__(self, x: jax.Array, mode_mask: jax.Array | None = None) -> jax.Array:
        return self._add_bias(mode_map(self.mode_layer(mode_mask), x, project=self._project))


def conv_as_matmul(x: jax.Array, kernel: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
                   padding: str) -> jax.Array:
    """The convolution of ``x (..., H, W, c_in)`` with the kernel ``(kh kw c_in, c_out)`` (rows in
    ``(kh, kw, c_in)`` order, as an HWIO kernel flattened), computed as image patches times the
    kernel matrix.

    Same numbers as ``lax.conv_general_dilated``, but its gradient with respect to the kernel is
    a matrix product: under ``vmap`` over runs (a sweep), a convolution's kernel gradient
    becomes a grouped convolution, which XLA:CPU runs slowly: a LeNet-5 sweep of 5 runs takes
    4.6x as long per step with ``lax.conv_general_dilated`` (``benchmarks/lenet.py``, batch
    128, 2 CPU cores).
    """
    kh, kw = kernel_size
    batch = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:])
    patches = jax.lax.conv_general_dilated_patches(flat, (kh, kw), tuple(strides), padding,
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    c_in = x.shape[-1]  # patches' features come channel-major, (c_in, kh, kw): reorder the kernel's rows
    rows = kernel.reshape(kh, kw, c_in, -1).transpose(2, 0, 1, 3).reshape(c_in * kh * kw, -1)
    out = patches @ rows
    return out.reshape(batch + out.shape[1:])


class Conv(nnx.Module):
    """A plain convolution (kernel ``(kh kw c_in, c_out)``, LeCun-normal, optional bias) computed
    like :class:`ModeConv` (:func:`conv_as_matmul`), for plain baselines of a mode model whose
    wall times are compared."""

    def __init__(self, in_features: int, features: int, kernel_size: Sequence[int], *, key: jax.Array,
                 strides: int | Sequence[int] = 1, padding: str = "SAME", use_bias: bool = True, dtype=jnp.float32):
        self.kernel_size = tuple(kernel_size)
        self.strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        self.padding = padding
        fan_in = self.kernel_size[0] * self.kernel_size[1] * in_features
        self.kernel = nnx.Param(jax.random.normal(key, (fan_in, features), dtype) / jnp.sqrt(jnp.asarray(fan_in, dtype)))
        self.bias = nnx.Param(jnp.zeros(features, dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv_as_matmul(x, self.kernel[...], self.kernel_size, self.strides, self.padding)
        return y if self.bias is None else y + self.bias[...]


def mode_modules(model: nnx.Module) -> list[_ModeFactors]:
    """The :class:`ModeDense` and :class:`ModeConv` layers of ``model``, by layer index."""
    found = [m for _, m in nnx.iter_modules(model) if isinstance(m, _ModeFactors)]
    return sorted(found, key=lambda m: m.layer)


#: Variable types a Flax model may hold: trained parameters, and the key and counter of a
#: random stream (``nnx.Dropout``), which the trainer sets from the run's key at every step.
_SUPPORTED = (nnx.Param, nnx.RngKey, nnx.RngCount)


def _check_builder(name: str, build) -> None:
    try:
        inspect.signature(build).bind(None, None, None)
    except TypeError:
        raise SpecError(
            f"flax_method {name!r}: the builder must take (key, spec, dtype) and return the model, e.g. "
            f"def __init__(self, key, spec, dtype); got {getattr(build, '__name__', build)}{inspect.signature(build)}"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the first build tell
        pass


def _abstract_model(name: str, build, spec: NetworkSpec, dtype) -> nnx.Module:
    try:
        return nnx.eval_shape(lambda: build(jax.random.PRNGKey(0), spec, dtype))
    except IndexError as err:
        raise SpecError(
            f"model {name!r} could not be built for widths {list(spec.widths)} and modes {list(spec.modes)} "
            f"({type(err).__name__}: {err}): the builder reads spec.widths and spec.modes beyond their ends; "
            "give widths with one entry per layer width of the model (N_0 .. N_L)"
        ) from None


def _check_model(name: str, model: nnx.Module, spec: NetworkSpec, modes: bool) -> None:
    """Refuses, with what to change, a model the trainer cannot train (once per architecture)."""
    other = sorted({(type(v).__name__, ".".join(map(str, path))) for path, v in nnx.iter_graph(model)
                    if isinstance(v, nnx.Variable) and not isinstance(v, _SUPPORTED)})
    if other:
        kinds = sorted({k for k, _ in other})
        raise SpecError(
            f"model {name!r} holds {', '.join('nnx.' + k for k in kinds)} variables ({', '.join(p for _, p in other)}): "
            "the trainer keeps nnx.Param (trained) and the random streams of nnx.Dropout (a fresh key every step, "
            "off in evaluation); running statistics such as nnx.BatchNorm's are not supported: use nnx.LayerNorm, "
            "or register the model without them"
        )
    if modes:
        try:
            inspect.signature(model.__call__).bind(None, None)
        except TypeError:
            raise SpecError(
                f"model {name!r}: its __call__ must take the mode mask as second argument, "
                "def __call__(self, x, mode_mask=None), and pass mode_mask[l] to its mode layer l; "
                f"got __call__{inspect.signature(model.__call__)}"
            ) from None
        layers = [m.layer for m in mode_modules(model)]
        if sorted(layers) != list(range(len(spec.modes))):
            raise SpecError(
                f"model {name!r} has mode layers with layer = {sorted(layers)}, but its spec has {len(spec.modes)} "
                f"mode counts {list(spec.modes)}: number the mode layers 0 .. {len(spec.modes) - 1}, one each"
            )


def flax_method(name: str, build: Callable[[jax.Array, NetworkSpec, object], nnx.Module], *,
                modes: bool = True, description: str = "") -> Method:
    """A table entry (:class:`mdl_jax.Method`) for a Flax NNX model, ready for
    :func:`mdl_jax.register_method`, after which it trains through :func:`mdl_jax.train`,
    ``mdl-jax train`` and the figure scripts like the letter's MLPs.

    ``build(key, spec, dtype)`` makes the model; its mode layers take ``layer = l`` for the
    ``l``-th entry of ``spec.modes``, and its ``__call__(x, mode_mask)`` passes ``mode_mask[l]``
    to layer ``l``. ``spec.modes`` holds one count per mode layer (a plain head has none), so a
    sweep's runs are labelled by their mode layers' counts. Parameters are the model's
    ``nnx.Param`` state as a plain nested dict. ``nnx.Dropout`` works: in training its stream
    gets a fresh key every step (from the run's seed, epoch and step), in evaluation it is off.
    Other state (``nnx.BatchNorm``'s running statistics) is refused at build time with a clear
    error, as are a builder without ``dtype``, a ``__call__`` without ``mode_mask``, mode layers
    that do not match the spec's mode counts and an output width other than ``widths[-1]``.
    ``modes=False`` registers a model without mode layers (a plain baseline, ``modes=None``).
    """
    _check_builder(name, build)

    @functools.lru_cache(maxsize=None)
    def mode_layer_count(widths: tuple[int, ...]) -> int:
        probe = NetworkSpec(widths, (1,) * (len(widths) - 1), name)
        return len(mode_modules(_abstract_model(name, build, probe, jnp.float32)))

    @functools.lru_cache(maxsize=None)
    def graph(spec: NetworkSpec, dtype) -> tuple:
        model = _abstract_model(name, build, spec, dtype)
        _check_model(name, model, spec, modes)
        mask = tuple(jnp.ones(p, dtype) for p in spec.modes) if modes else None
        call = lambda x: build(jax.random.PRNGKey(0), spec, dtype)(x, *([mask] if modes else []))
        out = jax.eval_shape(call, jax.ShapeDtypeStruct((2, spec.widths[0]), dtype))
        if out.shape != (2, spec.widths[-1]):
            raise SpecError(
                f"model {name!r} maps inputs (batch, {spec.widths[0]}) to {tuple(out.shape)}, not (batch, "
                f"{spec.widths[-1]}): its output width must be widths[-1] = {spec.widths[-1]}, the number of classes"
            )
        return nnx.split(model, nnx.Param, nnx.RngKey, nnx.RngCount)

    def dtype_of(params):
        return jnp.dtype(jax.tree.leaves(params)[0].dtype)

    def merge(params, spec: NetworkSpec, key=None) -> nnx.Module:
        """The model with ``params``; in training mode with its random streams keyed from
        ``key`` when one is given, else in evaluation mode (dropout off)."""
        graphdef, state, keys, counts = graph(spec, dtype_of(params))
        state = jax.tree.map(lambda a: a, state)  # a copy: replace_by_pure_dict fills it in place
        nnx.replace_by_pure_dict(state, params)
        base = jax.random.PRNGKey(0) if key is None else key
        leaves, treedef = jax.tree.flatten(keys)
        keys = treedef.unflatten([jax.random.wrap_key_data(jax.random.fold_in(base, i)) for i in range(len(leaves))])
        counts = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), counts)
        model = nnx.merge(graphdef, state, keys, counts)
        model.eval() if key is None else model.train()
        return model

    def init(key, spec: NetworkSpec, dtype):
        return nnx.to_pure_dict(nnx.state(build(key, spec, jnp.dtype(dtype)), nnx.Param))

    def param_count(spec: NetworkSpec) -> int:
        return sum(a.size for a in jax.tree.leaves(graph(spec, jnp.dtype(jnp.float32))[1]))

    def apply(params, x, spec: NetworkSpec, mode_mask, key=None):
        model = merge(params, spec, key)
        return model(x, mode_mask) if modes else model(x)

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
        return Method(name, init, param_count, apply=apply, stochastic=True, description=description)
    return Method(name, init, param_count, mode_layers=mode_layers, apply=apply, mask_params=mask_params,
                  stochastic=True, mode_layer_count=mode_layer_count, description=description)
