"""Models beyond the MLP for ``experiments/beyond_mlp.py``: a small CNN and a small vision
transformer on MNIST, each with mode-decomposed layers (``mdl_jax.nn``) or plain Flax layers,
registered as methods (``cnn_modes``, ``cnn_plain``, ``vit_modes``, ``vit_plain``) so that they
train through the run driver like the letter's MLPs; and LeNet-5 as DLRT's benchmark has it
(``lenet_modes``, ``lenet_plain``; ``experiments/vs_dlrt.py``).

Importing this module registers them, so a config can name it in ``imports``:
``mdl-jax train --set imports=experiments.models --set methods=cnn_modes --set "widths=[784,16,32,10]"``.
A spec's ``modes`` lists one count per mode layer; its ``widths`` are only checked at the ends
(784 inputs, 10 classes), so ``widths`` has one entry more than the model has mode layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import mdl_jax
from mdl_jax.nn import Conv, ModeConv, ModeDense, flax_method

CNN_WIDTHS = (784, 16, 32, 10)  # channels of the two convolutions, then the classes
VIT_WIDTH, VIT_HEADS, VIT_BLOCKS, VIT_HIDDEN, PATCH = 64, 4, 2, 128, 7
VIT_WIDTHS = (784,) + (VIT_WIDTH,) * (6 * VIT_BLOCKS - 1) + (10,)  # 6 mode layers per block


def _dense(modes: bool, key, layer: int, a: int, b: int, p: int, dtype, bias: bool = False):
    if modes:
        return ModeDense(a, b, p, key=key, layer=layer, use_bias=bias, dtype=dtype)
    return nnx.Linear(a, b, use_bias=bias, param_dtype=dtype, rngs=nnx.Rngs(jax.random.fold_in(key, layer)))


def _call(layer, x, mask, l):
    return layer(x, None if mask is None else mask[l]) if isinstance(layer, (ModeDense, ModeConv)) else layer(x)


class CNN(nnx.Module):
    """conv 3x3 stride 2 -> relu -> conv 3x3 stride 2 -> relu -> dense to the classes."""

    def __init__(self, key, spec, dtype, *, modes: bool):
        c1, c2, classes = spec.widths[1:]
        p = spec.modes or (0, 0, 0)
        if modes:
            self.conv0 = ModeConv(1, c1, (3, 3), p[0], key=key, layer=0, strides=2, use_bias=True, dtype=dtype)
            self.conv1 = ModeConv(c1, c2, (3, 3), p[1], key=key, layer=1, strides=2, use_bias=True, dtype=dtype)
        else:
            self.conv0 = nnx.Conv(1, c1, (3, 3), 2, param_dtype=dtype, rngs=nnx.Rngs(jax.random.fold_in(key, 0)))
            self.conv1 = nnx.Conv(c1, c2, (3, 3), 2, param_dtype=dtype, rngs=nnx.Rngs(jax.random.fold_in(key, 1)))
        self.head = _dense(modes, key, 2, 7 * 7 * c2, classes, p[2], dtype, bias=True)

    def __call__(self, x, mode_mask=None):
        h = x.reshape(*x.shape[:-1], 28, 28, 1)
        h = jax.nn.relu(_call(self.conv0, h, mode_mask, 0))
        h = jax.nn.relu(_call(self.conv1, h, mode_mask, 1))
        return _call(self.head, h.reshape(*h.shape[:-3], -1), mode_mask, 2)


LENET_WIDTHS = (784, 20, 50, 500, 10)  # channels of the two convolutions, the hidden units, the classes


class LeNet5(nnx.Module):
    """LeNet-5 of DLRT's MNIST benchmark: conv 1->20 5x5 -> relu -> max-pool 2 -> conv 20->50 5x5
    -> relu -> max-pool 2 -> dense 800->500 -> relu -> dense 500->10 (430,500 weights, with
    biases). The two convolutions and the first dense layer are the mode layers; the head stays
    dense, as in DLRT."""

    def __init__(self, key, spec, dtype, *, modes: bool):
        c1, c2, hidden, classes = spec.widths[1:]
        p = spec.modes or (0, 0, 0)
        if modes:
            self.conv0 = ModeConv(1, c1, (5, 5), p[0], key=key, layer=0, padding="VALID", use_bias=True, dtype=dtype)
            self.conv1 = ModeConv(c1, c2, (5, 5), p[1], key=key, layer=1, padding="VALID", use_bias=True, dtype=dtype)
        else:
            conv = lambda a, b, l: Conv(a, b, (5, 5), key=jax.random.fold_in(key, l), padding="VALID", dtype=dtype)
            self.conv0, self.conv1 = conv(1, c1, 0), conv(c1, c2, 1)  # computed as ModeConv is
        self.dense = _dense(modes, key, 2, 16 * c2, hidden, p[2], dtype, bias=True)
        self.head = nnx.Linear(hidden, classes, param_dtype=dtype, rngs=nnx.Rngs(jax.random.fold_in(key, 3)))

    def __call__(self, x, mode_mask=None):
        pool = lambda h: nnx.max_pool(h, (2, 2), strides=(2, 2))
        h = x.reshape(*x.shape[:-1], 28, 28, 1)
        h = pool(jax.nn.relu(_call(self.conv0, h, mode_mask, 0)))
        h = pool(jax.nn.relu(_call(self.conv1, h, mode_mask, 1)))
        h = jax.nn.relu(_call(self.dense, h.reshape(*h.shape[:-3], -1), mode_mask, 2))
        return self.head(h)


class ViT(nnx.Module):
    """7x7 patches, width 64, 4 heads, 2 pre-norm blocks; the query, key, value, output and the
    two MLP projections of every block are the mode layers (6 per block)."""

    def __init__(self, key, spec, dtype, *, modes: bool):
        p = spec.modes or (0,) * (6 * VIT_BLOCKS)
        rngs = nnx.Rngs(jax.random.fold_in(key, 1000))
        self.embed = nnx.Linear(PATCH * PATCH, VIT_WIDTH, param_dtype=dtype, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(jax.random.fold_in(key, 1001), (16, VIT_WIDTH), dtype))
        for b in range(VIT_BLOCKS):
            shapes = [(VIT_WIDTH, VIT_WIDTH)] * 4 + [(VIT_WIDTH, VIT_HIDDEN), (VIT_HIDDEN, VIT_WIDTH)]
            for j, (name, (a, o)) in enumerate(zip(("q", "k", "v", "o", "fc1", "fc2"), shapes)):
                l = 6 * b + j
                setattr(self, f"{name}{b}", _dense(modes, key, l, a, o, p[l], dtype, bias=name.startswith("fc")))
            setattr(self, f"norm_attention{b}", nnx.LayerNorm(VIT_WIDTH, param_dtype=dtype, rngs=rngs))
            setattr(self, f"norm_mlp{b}", nnx.LayerNorm(VIT_WIDTH, param_dtype=dtype, rngs=rngs))
        self.norm = nnx.LayerNorm(VIT_WIDTH, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(VIT_WIDTH, 10, param_dtype=dtype, rngs=rngs)

    def _attention(self, h, b, mask):
        heads = lambda t: t.reshape(*t.shape[:-1], VIT_HEADS, VIT_WIDTH // VIT_HEADS)
        q, k, v = (heads(_call(getattr(self, f"{n}{b}"), h, mask, 6 * b + j)) for j, n in enumerate("qkv"))
        weights = jax.nn.softmax(jnp.einsum("...qhd,...khd->...hqk", q, k) / q.shape[-1] ** 0.5, axis=-1)
        out = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(h.shape)
        return _call(getattr(self, f"o{b}"), out, mask, 6 * b + 3)

    def __call__(self, x, mode_mask=None):
        patches = x.reshape(*x.shape[:-1], 4, PATCH, 4, PATCH)
        patches = jnp.swapaxes(patches, -3, -2).reshape(*x.shape[:-1], 16, PATCH * PATCH)
        h = self.embed(patches) + self.position[...]
        for b in range(VIT_BLOCKS):
            h = h + self._attention(getattr(self, f"norm_attention{b}")(h), b, mode_mask)
            hidden = jax.nn.gelu(_call(getattr(self, f"fc1{b}"), getattr(self, f"norm_mlp{b}")(h), mode_mask, 6 * b + 4))
            h = h + _call(getattr(self, f"fc2{b}"), hidden, mode_mask, 6 * b + 5)
        return self.head(self.norm(h).mean(-2))


def register() -> None:
    """Adds the six models to the table of methods (again on a second call: idempotent)."""
    for model, family in ((CNN, "cnn"), (ViT, "vit"), (LeNet5, "lenet")):
        for modes in (True, False):
            name = f"{family}_{'modes' if modes else 'plain'}"
            build = lambda key, spec, dtype, model=model, modes=modes: model(key, spec, dtype, modes=modes)
            mdl_jax.register_method(flax_method(name, build, modes=modes, description=f"{model.__doc__.splitlines()[0]}"),
                                    replace=True)


register()  # importing the module (e.g. through a config's 'imports') makes the models known
