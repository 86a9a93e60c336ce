"""Mode pruning during training: the least number of modes found by the run itself.

Every ``prune_every`` epochs each mode layer drops its weakest modes by the letter's
importance tau (Fig. 3): sorted by tau, the modes whose cumulative share of the layer's tau
stays below ``prune_tau`` are masked, never leaving fewer than ``min_modes``. The mask is part
of the training state (traced, checkpointed), so a sweep over seeds x ``prune_tau`` x p_max is
one compiled program and a changed mask recompiles nothing; a pruned mode is zeroed in the
parameters and in the optimizer's moments, and stays zero as a padded mode does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mdl_jax._methods import Params, zero_inactive_modes
from mdl_jax._models import mode_importance, mode_layers
from mdl_jax._spec import NetworkSpec


def prune_layer(tau: jax.Array, mask: jax.Array, prune_tau: jax.Array, min_modes: int) -> jax.Array:
    """The mask of one layer after pruning, ``(p,)``.

    Active modes sorted by ``tau`` (weakest first) are removed while their cumulative share of
    the active modes' total tau is below ``prune_tau``, keeping at least ``min_modes`` active
    (or all, if fewer are). Inactive modes stay inactive.

    .. math:: \\text{removed}_a \\iff \\sum_{b:\\,\\tau_b \\le \\tau_a} \\tau_b < \\text{prune\\_tau} \\sum_b \\tau_b
    """
    active = mask > 0
    order = jnp.argsort(jnp.where(active, tau, jnp.inf))  # active modes first, weakest first
    sorted_tau = jnp.where(active[order], tau[order], 0.0)
    share = jnp.cumsum(sorted_tau) / jnp.maximum(jnp.sum(sorted_tau), jnp.finfo(tau.dtype).tiny)
    removable = jnp.arange(tau.shape[0]) < jnp.sum(active) - min_modes
    remove_sorted = (share < prune_tau) & active[order] & removable
    remove = jnp.zeros_like(active).at[order].set(remove_sorted)
    return jnp.where(remove, jnp.zeros_like(mask), mask)


def prune_masks(params: Params, spec: NetworkSpec, mask: Sequence[jax.Array], prune_tau: jax.Array,
                min_modes: int) -> tuple[jax.Array, ...]:
    """Every mode layer's mask after :func:`prune_layer` with the current parameters' tau."""
    return tuple(prune_layer(mode_importance(layer, m), m, prune_tau, min_modes)
                 for layer, m in zip(mode_layers(params, spec, mask), mask))


def zero_pruned(tree, params: Params, spec: NetworkSpec, mask: Sequence[jax.Array]):
    """``tree`` (an optimizer state, or parameters) with the inactive modes of every subtree
    shaped like ``params`` set to zero (Adam's moments, the parameters themselves)."""
    structure = jax.tree.structure(params)
    like_params = lambda node: jax.tree.structure(node) == structure
    return jax.tree.map(lambda node: zero_inactive_modes(node, spec, mask) if like_params(node) else node,
                        tree, is_leaf=like_params)
