"""Metropolis sampling of an Ising model: sweeps, chains, samples, and the fraction of chains
that reverse a configuration."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mdl_jax.landscape.models import Ising


def _metropolis_sweep(model: Ising, spins: jax.Array, key: jax.Array) -> jax.Array:
    """One sequential single-spin Metropolis sweep over all ``N`` spins of one chain."""
    uniforms = jax.random.uniform(key, spins.shape, model.h.dtype)

    def flip(i, spins):
        delta = 2 * spins[i] * (model.J[i] @ spins + model.h[i])  # energy increase of flipping i
        return spins.at[i].multiply(jnp.where(uniforms[i] < jnp.exp(-delta), -1.0, 1.0))

    return jax.lax.fori_loop(0, spins.shape[0], flip, spins)


def _run_chains(model: Ising, spins: jax.Array, key: jax.Array, sweeps: int) -> jax.Array:
    """``sweeps`` Metropolis sweeps of every chain (leading axis of ``spins``); returns the
    states after each sweep, ``(sweeps, chains, N)``."""
    def sweep(spins, key):
        spins = jax.vmap(_metropolis_sweep, (None, 0, 0))(model, spins, jax.random.split(key, spins.shape[0]))
        return spins, spins

    return jax.lax.scan(sweep, spins, jax.random.split(key, sweeps))[1]


@functools.partial(jax.jit, static_argnames=("chains", "sweeps", "burn_in", "thin"))
def metropolis(
    model: Ising, key: jax.Array, *, chains: int, sweeps: int, burn_in: int, thin: int = 1,
    init: jax.Array | None = None,
) -> jax.Array:
    """Samples of the Ising model by single-spin Metropolis (sequential sweeps).

    ``chains`` independent chains start from uniformly random states, or from the rows of
    ``init`` (e.g. data samples, so that a model with several separated states is sampled
    where the data are); returns ``(chains * (sweeps - burn_in) // thin, N)`` samples.
    """
    n = model.h.shape[0]
    k0, k1 = jax.random.split(key)
    if init is None:
        init = jnp.where(jax.random.bernoulli(k0, 0.5, (chains, n)), 1.0, -1.0)
    elif init.shape != (chains, n):
        raise ValueError(f"init has shape {init.shape}; it needs one starting state per chain, ({chains}, {n})")
    states = _run_chains(model, jnp.asarray(init, model.h.dtype), k1, sweeps)
    return jnp.swapaxes(states[burn_in::thin], 0, 1).reshape(-1, n)


@functools.partial(jax.jit, static_argnames=("chains", "sweeps"))
def reversed_state_fraction(model: Ising, spins: jax.Array, key: jax.Array, *, chains: int = 128, sweeps: int = 200) -> jax.Array:
    """Share of Metropolis chains started at uniformly random configurations that end in the
    reversed state of the data: overlap with the data's mean sign pattern ``sign(<s>)`` below
    minus half the data's own mean overlap. A model whose couplings carry the data's
    polarisation (a ferromagnet in the gauge of the mean configuration) sends about half its
    chains there; one whose fields carry it, none."""
    spins = jnp.asarray(spins, model.h.dtype)
    pattern = jnp.where(spins.mean(0) >= 0, 1.0, -1.0).astype(model.h.dtype)
    data_overlap = jnp.mean(spins @ pattern) / pattern.shape[0]
    final = metropolis(model, key, chains=chains, sweeps=sweeps, burn_in=sweeps - 1)  # (chains, N): the last sweep
    return jnp.mean(final @ pattern / pattern.shape[0] < -data_overlap / 2)
