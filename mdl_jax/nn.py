"""Mode-decomposed Flax (NNX) layers for any model, and the bridge that trains such a model
through mdl-jax's trainer and run driver (see ``mdl_jax/_nn.py`` for why NNX)."""

from mdl_jax._nn import (
    Conv as Conv,
    conv_as_matmul as conv_as_matmul,
    ModeConv as ModeConv,
    ModeDense as ModeDense,
    flax_method as flax_method,
    mode_modules as mode_modules,
)
