"""The table of methods: one entry per way of parametrising a weight layer.

Each :class:`Method` says how to draw its parameters, how its layers map to modes (or to
plain weights), how many trainable scalars it has and what it adds to the loss. Everything
downstream (:func:`mdl_jax.apply`, the trainer, the analyses, the command line) looks the
method up here, so a new method is one call of :func:`register_method`.

Mode methods keep the mode axis last in every array, and array ``i`` of a field belongs to
weight layer ``min(i, L - 1)``; :func:`zero_inactive_modes` relies on this convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax import _binary
from mdl_jax._spec import NetworkSpec, SpecError, full_ranks

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


class Method(NamedTuple):
    """One entry of the table of methods.

    Attributes:
      name: what configs and specs call it.
      init: ``(key, spec, dtype) -> params``.
      param_count: ``spec -> number of trainable scalars`` (active modes only).
      mode_layers: ``(params, spec) -> [ModeLayer]`` for a mode method; ``None`` for a method
        with plain weight matrices.
      weights: ``(params, spec) -> [W^l]`` for a plain method (the matrices ``z = h @ W^l``
        uses); ``None`` for a mode method.
      penalty: ``(params, spec, mode_mask, orthogonality, sparsity) -> scalar`` added to the
        training loss, or ``None``.
      apply: ``(params, x, spec, mode_mask) -> logits``, a model's own forward pass (a CNN, a
        transformer, a Flax module's ``apply``); ``None``: the ReLU MLP over the layers above.
        With it, any pure ``(init, apply)`` pair trains through the trainer and the run driver.
      mask_params: ``(params, spec, mode_mask) -> params`` with inactive modes zeroed, for a
        parameter layout other than "mode axis last" (see :func:`zero_inactive_modes`).
      stochastic: ``apply`` also takes ``key=``: the trainer passes a fresh key every step
        (the binary networks' sampled pre-activations); evaluation calls it without one.
      shared_modes: every layer must have the same mode count (``mdl_1l1p``).
      rank_by_default: a missing mode count means each layer's full rank, and larger counts
        are capped at it (``svd``).
      mode_layer_count: ``widths -> number of mode layers`` of a model whose mode layers are
        not one per weight layer (a Flax model with a plain head); ``spec.modes`` then holds
        one count per mode layer. ``None``: one per weight layer.
      description: one line for ``--help`` texts and docs.
    """

    name: str
    init: Callable[[jax.Array, NetworkSpec, Any], Params]
    param_count: Callable[[NetworkSpec], int]
    mode_layers: Callable[[Params, NetworkSpec], list[ModeLayer]] | None = None
    weights: Callable[[Params, NetworkSpec], list[jax.Array]] | None = None
    penalty: Callable[..., jax.Array] | None = None
    apply: Callable[..., jax.Array] | None = None
    mask_params: Callable[[Params, NetworkSpec, ModeMask], Params] | None = None
    stochastic: bool = False
    shared_modes: bool = False
    rank_by_default: bool = False
    mode_layer_count: Callable[[tuple[int, ...]], int] | None = None
    description: str = ""

    @property
    def has_modes(self) -> bool:
        return self.mode_layers is not None


def init_scale(fan_in: int) -> float:
    """Standard deviation ``s_l = (N_l ln N_l)^(-1/6)`` of every factor entry of layer l.

    A weight is then a sum of ``p`` products of three such entries, ``O(1/sqrt(N_l ln N_l))``
    up to the sum over modes (method notes, section 1).
    """
    if fan_in == 1:
        return 1.0
    return (fan_in * math.log(fan_in)) ** (-1.0 / 6.0)


def column_keys(key: jax.Array, factors: Sequence[tuple[int, int, int]]) -> list[jax.Array]:
    """For each ``(layer, factor, p)`` of ``factors``, the ``p`` keys
    ``fold_in(factor_key(key, layer, factor), a)``, ``a < p``: a mode's initial value depends
    only on them. Derived for all factors at once (three batched hashes instead of three per
    factor), which is integer arithmetic, hence exact, and makes a network's initial draws
    compile faster (docs/benchmarks.md)."""
    sizes = [p for _, _, p in factors]
    layer, factor, mode = (jnp.asarray(np.concatenate(column).astype(np.uint32))
                           for column in zip(*[(np.full(p, l), np.full(p, f), np.arange(p)) for l, f, p in factors]))
    keys = jax.vmap(lambda l: jax.random.fold_in(key, l))(layer)
    keys = jax.vmap(jax.random.fold_in)(keys, factor)
    keys = jax.vmap(jax.random.fold_in)(keys, mode)
    return jnp.split(keys, np.cumsum(sizes)[:-1])


def mode_columns(keys: jax.Array, rows: int, scale: float, dtype) -> jax.Array:
    """``(rows, p)`` Gaussian columns, column ``a`` drawn from ``keys[a]`` alone (:func:`column_keys`)."""
    return scale * jax.vmap(lambda k: jax.random.normal(k, (rows,), dtype))(keys).T


def factor_key(key: jax.Array, layer: int, factor: int) -> jax.Array:
    """The key of one factor of one layer: ``fold_in(fold_in(key, layer), factor)``."""
    return jax.random.fold_in(jax.random.fold_in(key, layer), factor)


def _pairs(spec: NetworkSpec) -> list[tuple[int, int]]:
    return list(zip(spec.widths[:-1], spec.widths[1:]))


def _weight_count(spec: NetworkSpec) -> int:
    return sum(a * b for a, b in _pairs(spec))


# --- mdl (1L2P) and two_factor -------------------------------------------------------------


def mode_factors(key: jax.Array, layer: int, fan_in: int, features: int, p: int, dtype) -> ModeLayer:
    """The initial ``(xi_hat, sigma, xi)`` of weight layer ``layer``: every entry
    ``N(0, s^2)`` with ``s = init_scale(fan_in)``, column ``a`` of each factor from
    ``(key, layer, factor, a)`` alone. Shared by ``mdl`` and :mod:`mdl_jax.nn`."""
    return _mode_layers(key, [(layer, fan_in, features, p)], dtype)[0]


def _mode_layers(key: jax.Array, layers: Sequence[tuple[int, int, int, int]], dtype) -> list[ModeLayer]:
    """:func:`mode_factors` of each ``(layer, fan_in, features, p)``, their keys derived together."""
    keys = column_keys(key, [(layer, factor, p) for layer, _, _, p in layers for factor in (_XI_HAT, _SIGMA, _XI)])
    drawn = []
    for i, (_, fan_in, features, _) in enumerate(layers):
        xi_hat, sigma, xi, scale = *keys[3 * i:3 * i + 3], init_scale(fan_in)
        drawn.append(ModeLayer(mode_columns(xi_hat, fan_in, scale, dtype), mode_columns(sigma, 1, scale, dtype)[0],
                               mode_columns(xi, features, scale, dtype)))
    return drawn


def _init_mdl(key, spec: NetworkSpec, dtype) -> Params:
    layers = _mode_layers(key, [(l, a, b, p) for l, (p, (a, b)) in enumerate(zip(spec.modes, _pairs(spec)))], dtype)
    return {field: [getattr(layer, field) for layer in layers] for field in ModeLayer._fields}


def _init_two_factor(key, spec: NetworkSpec, dtype) -> Params:
    params = _init_mdl(key, spec, dtype)
    del params["sigma"]
    return params


def _count_modes(sigma_per_mode: int):
    return lambda spec: sum(p * (a + b + sigma_per_mode) for p, (a, b) in zip(spec.modes, _pairs(spec)))


# --- mdl_1l1p ------------------------------------------------------------------------------


def _init_1l1p(key, spec: NetworkSpec, dtype) -> Params:
    p, L = spec.modes[0], spec.num_layers
    # pattern l takes the scale of the layer it feeds (the last pattern, the output layer's)
    keys = column_keys(key, [(l, _PATTERN, p) for l in range(L + 1)] + [(l, _SIGMA, p) for l in range(L)])
    patterns = [mode_columns(keys[l], spec.widths[l], init_scale(spec.widths[min(l, L - 1)]), dtype) for l in range(L + 1)]
    sigma = [mode_columns(keys[L + 1 + l], 1, init_scale(spec.widths[l]), dtype)[0] for l in range(L)]
    return {"patterns": patterns, "sigma": sigma}


def _layers_1l1p(params: Params, spec: NetworkSpec) -> list[ModeLayer]:
    pat = params["patterns"]
    return [ModeLayer(pat[l], params["sigma"][l], pat[l + 1]) for l in range(spec.num_layers)]


# --- bp ------------------------------------------------------------------------------------


def _init_bp(key, spec: NetworkSpec, dtype) -> Params:
    return {"weights": [
        jax.random.normal(factor_key(key, l, 0), (a, b), dtype) / math.sqrt(a) for l, (a, b) in enumerate(_pairs(spec))
    ]}


def _init_bp_fanin(key, spec: NetworkSpec, dtype) -> Params:
    return {"weights": [jax.random.normal(factor_key(key, l, 0), (a, b), dtype) for l, (a, b) in enumerate(_pairs(spec))]}


# --- svd (Yang et al. 2020) ----------------------------------------------------------------


def _init_svd(key, spec: NetworkSpec, dtype) -> Params:
    u, s, v = [], [], []
    for l, (r, (a, b)) in enumerate(zip(spec.modes, _pairs(spec))):
        w = jax.random.normal(factor_key(key, l, 0), (a, b), dtype)
        left, singular, right_t = jnp.linalg.svd(w / math.sqrt(a), full_matrices=False)
        u.append(left[:, :r])
        s.append(singular[:r])
        v.append(right_t[:r].T)
    return {"u": u, "s": s, "v": v}


def _svd_penalty(params: Params, spec: NetworkSpec, mode_mask: ModeMask, orthogonality: float, sparsity: float):
    """``sum_l [w_o (||U^T U - I||_F^2 + ||V^T V - I||_F^2) / r^2 + w_s ||s||_1 / ||s||_2]``
    over active modes (method notes, section 3)."""
    mask = mode_mask if mode_mask is not None else [jnp.ones_like(s) for s in params["s"]]
    total = 0.0
    for u, s, v, m in zip(params["u"], params["s"], params["v"], mask):
        rank = jnp.sum(m)
        eye = jnp.diag(m)
        ortho = sum(jnp.sum(((a * m).T @ (a * m) - eye) ** 2) for a in (u, v)) / rank**2
        sparse = jnp.sum(jnp.abs(s) * m) / jnp.sqrt(jnp.sum(s**2 * m))
        total = total + orthogonality * ortho + sparsity * sparse
    return total


#: The table. Read it through :func:`get_method`; extend it with :func:`register_method`.
METHODS: dict[str, Method] = {}


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Adds ``method`` to the table, so that specs, configs, the trainer and the CLI know it."""
    if method.apply is None and (method.mode_layers is None) == (method.weights is None):
        raise SpecError(f"method {method.name!r} needs its own apply, or exactly one of mode_layers and weights")
    if method.stochastic and method.apply is None:
        raise SpecError(f"method {method.name!r} is stochastic: it needs its own apply, which takes key=")
    if method.name in METHODS and not replace:
        raise SpecError(f"method {method.name!r} is already registered (pass replace=True to redefine it)")
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Removes a method added by :func:`register_method` (e.g. at the end of a test)."""
    METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The table entry of ``name``; a clear error naming the known methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise SpecError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


register_method(Method(
    "mdl", _init_mdl, _count_modes(1),
    mode_layers=lambda params, spec: [ModeLayer(*f) for f in zip(params["xi_hat"], params["sigma"], params["xi"])],
    description="1L2P mode decomposition, W = xi_hat diag(sigma) xi^T, all factors free",
))
register_method(Method(
    "mdl_1l1p", _init_1l1p, lambda spec: spec.modes[0] * (sum(spec.widths) + spec.num_layers),
    mode_layers=_layers_1l1p, shared_modes=True,
    description="1L1P: the downstream patterns of layer l are the upstream ones of layer l+1",
))
register_method(Method(
    "two_factor", _init_two_factor, _count_modes(0),
    mode_layers=lambda params, spec: [
        ModeLayer(a, jnp.ones(a.shape[1], a.dtype), b) for a, b in zip(params["xi_hat"], params["xi"])
    ],
    description="W = xi_hat xi^T (sigma fixed at one, not trained)",
))
register_method(Method(
    "bp", _init_bp, _weight_count,
    weights=lambda params, spec: list(params["weights"]),
    description="plain weight matrices, z = h @ W, W ~ N(0, 1/N_l)",
))
register_method(Method(
    "bp_fanin", _init_bp_fanin, _weight_count,
    weights=lambda params, spec: [w / math.sqrt(w.shape[0]) for w in params["weights"]],
    description="the authors' BP: z = h @ W / sqrt(N_l), W ~ N(0, 1); under Adam an effective "
    "learning rate about lr / sqrt(N_l) (method notes, section 3)",
))
register_method(Method(
    "svd", _init_svd, _count_modes(1),
    mode_layers=lambda params, spec: [
        ModeLayer(u, jnp.abs(s), v) for u, s, v in zip(params["u"], params["s"], params["v"])
    ],
    penalty=_svd_penalty, rank_by_default=True,
    description="W = U diag(|s|) V^T with orthogonality and sparsity penalties (Yang et al. 2020)",
))
register_method(Method(
    "binary", _binary.init_binary, _weight_count,
    weights=lambda params, spec: [jnp.tanh(t / 2) for t in params["logits"]],
    penalty=_binary.l2_penalty, apply=_binary.apply_binary, stochastic=True,
    description="binary weights w = +-1 with P(w = +1) = sigmoid(theta), trained by local "
    "reparametrisation (the effective model's networks; evaluated at w = sign(theta))",
))


def mode_mask(modes: Sequence[int], padded: Sequence[int], dtype: str = "float32") -> tuple[jax.Array, ...]:
    """0/1 masks with the first ``modes[l]`` of ``padded[l]`` modes active in each layer.

    The one place a mode mask is built; ``()`` for a method without modes.
    """
    return tuple((jnp.arange(q) < p).astype(dtype) for p, q in zip(modes, padded))


def full_mask(spec: NetworkSpec, dtype: str = "float32") -> tuple[jax.Array, ...]:
    """Every mode of ``spec`` active: :func:`mode_mask` of its own mode counts."""
    return mode_mask(spec.modes, spec.modes, dtype)


def with_layer_mask(mask: Sequence[jax.Array], layer: int, layer_mask: jax.Array) -> tuple[jax.Array, ...]:
    """``mask`` with the vector of ``layer`` replaced by ``layer_mask`` (e.g. to remove modes
    from one layer only)."""
    return tuple(layer_mask if l == layer else m for l, m in enumerate(mask))


def zero_inactive_modes(params: Params, spec: NetworkSpec, mask: ModeMask) -> Params:
    """``params`` with every array's inactive mode columns set to zero.

    A padded run trained this way holds exact zeros in its unused modes, so its parameters
    evaluate correctly with or without the mask; the active modes are untouched.
    """
    method = get_method(spec.method)
    if mask is None or not method.has_modes:
        return params
    if method.mask_params is not None:
        return method.mask_params(params, spec, mask)
    last = spec.num_layers - 1
    return {
        name: [a * mask[min(i, last)].astype(a.dtype) for i, a in enumerate(arrays)]
        for name, arrays in params.items()
    }


def make_spec(
    widths: Sequence[int], modes: int | Sequence[int] | None = None, method: str = "mdl"
) -> NetworkSpec:
    """Builds and validates a :class:`NetworkSpec`.

    Args:
      widths: ``(N_0, ..., N_L)``, at least an input and an output width, all >= 1.
      modes: one mode count for every layer, or one per weight layer. Required for the mode
        methods except those with ``rank_by_default`` (``svd``), whose rank defaults to
        ``min(N_l, N_{l+1})``; must be left out (``None``) for a plain method (``bp``).
      method: a name in :data:`METHODS`.

    Raises:
      SpecError: naming the offending value and what would fix it.
    """
    entry = get_method(method)
    widths = tuple(widths)
    if len(widths) < 2:
        raise SpecError(
            f"widths {list(widths)} describe no weight layer: give at least an input and an "
            "output width, e.g. [784, 100, 100, 10]"
        )
    for n in widths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SpecError(f"every width must be an integer >= 1, got {n!r} in {list(widths)}")
    num_layers, ranks = len(widths) - 1, full_ranks(widths)
    if not entry.has_modes:
        if modes is not None:
            raise SpecError(f"method {method!r} has plain weight matrices and takes no mode count")
        return NetworkSpec(widths, (), method)
    if modes is None:
        if not entry.rank_by_default:
            raise SpecError(f"method {method!r} needs a mode count p (e.g. modes=30)")
        modes = ranks
    count = num_layers if entry.mode_layer_count is None else entry.mode_layer_count(widths)
    if isinstance(modes, int):
        modes = (modes,) * count
    modes = tuple(modes)
    if len(modes) != count:
        layers = f"{num_layers} weight layers" if entry.mode_layer_count is None else f"the {count} mode layers of {method!r}"
        raise SpecError(
            f"got {len(modes)} mode counts {list(modes)} for {layers} "
            f"(widths {list(widths)}): give one count, or one per {'weight' if entry.mode_layer_count is None else 'mode'} layer"
        )
    for p in modes:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise SpecError(f"the number of modes p must be an integer >= 1, got {p!r}")
    if entry.shared_modes and len(set(modes)) > 1:
        raise SpecError(
            f"{method} shares each hidden layer's patterns between two weight layers, so every "
            f"layer needs the same p; got {list(modes)}"
        )
    if entry.rank_by_default:
        for l, (p, r) in enumerate(zip(modes, ranks)):
            if p > r:
                raise SpecError(f"{method} rank {p} of layer {l} exceeds min(N_l, N_l+1) = {r}")
    return NetworkSpec(widths, modes, method)
