"""A module that registers a method when imported: the target of a config's 'imports' in
test_workdir.py. A linear softmax classifier with its own apply."""

import jax
import jax.numpy as jnp

import mdl_jax


def _init(key, spec, dtype):
    return {"w": jax.random.normal(key, (spec.widths[0], spec.widths[-1]), dtype) * 0.1,
            "b": jnp.zeros(spec.widths[-1], dtype)}


mdl_jax.register_method(mdl_jax.Method(
    "toy_linear", _init, lambda spec: spec.widths[0] * spec.widths[-1] + spec.widths[-1],
    apply=lambda params, x, spec, mode_mask: x @ params["w"] + params["b"],
), replace=True)
