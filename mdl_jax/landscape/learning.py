"""Inverse Ising: Boltzmann-machine learning with BP moments or with Metropolis moments, and
pseudo-likelihood."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdl_jax.landscape.bp import _fresh_messages, belief_propagation
from mdl_jax.landscape.mcmc import _run_chains
from mdl_jax.landscape.models import _independent_model, Ising, sample_moments


BP_STARTS = ("independent", "zero")  # where Boltzmann learning with BP moments may start


class BoltzmannFit(NamedTuple):
    model: Ising
    rms_error: jax.Array  # RMS moment error of the returned iterate
    history: jax.Array  # RMS error at every iteration


@functools.partial(jax.jit, static_argnames=("iterations", "criterion", "start", "burn_in"))
def boltzmann_learning(
    samples: jax.Array, *, iterations: int = 100, lr_couplings: float = 0.01, lr_fields: float = 0.3,
    l2: float = 1e-4, damping: float = 0.5, tol: float = 1e-4, max_sweeps: int = 1000, criterion: str = "max",
    start: str = "independent", restart: jax.Array | None = None, burn_in: int = 0,
) -> BoltzmannFit:
    """Inverse Ising by Boltzmann-machine learning with BP moments (notes, section 2).

    ``J <- J - lr_J (C_model - C_data + l2 J)``, ``h <- h - lr_h (m_model - m_data)`` with the
    raw second moments ``C = <s_i s_j>`` and the model's moments from BP; returns the iterate
    with the lowest moment error ``sqrt(mean_i dm_i^2 + mean_{i != j} dC_ij^2)`` among the
    iterations from ``burn_in`` on.

    BP starts from the previous iteration's messages, or, with a ``restart`` key, from fresh
    ``N(0, 0.01^2)`` messages at every iteration. The authors' code: ``damping=0``,
    ``criterion="mean"``, ``restart`` given, ``burn_in=51`` (their best iterate comes after
    iteration 50), ``start="zero"`` (their start, couplings of order ``1/N^2``, is zero to
    that order).

    ``start``: ``"independent"`` (no couplings, fields ``atanh(m_data)``) or ``"zero"`` (``J = 0,
    h = 0``, the textbook start; the notes do not say which). The two can end far apart on
    strongly polarised data: from zero, the raw second moments ``m_i m_j`` pull the couplings
    towards a ferromagnet in the gauge of the mean configuration (``J_ij ~ m_i m_j``) before
    the fields have grown, and the Bethe approximation keeps that ferromagnet in one of its
    phases, so the learning settles on a model whose polarisation comes partly from couplings.
    """
    mean, second = sample_moments(samples)
    n = mean.shape[0]
    off = 1.0 - jnp.eye(n, dtype=mean.dtype)
    if start not in BP_STARTS:
        raise ValueError(f"start={start!r}: use 'independent' (fields atanh(m), no couplings) or 'zero' (J = 0, h = 0)")
    if not 0 <= burn_in < iterations:
        raise ValueError(f"burn_in={burn_in} must be at least 0 and below iterations={iterations}")
    initial = _independent_model(mean)
    if start == "zero":
        initial = jax.tree.map(jnp.zeros_like, initial)
    keys = jax.random.split(jax.random.PRNGKey(0) if restart is None else restart, iterations)

    def step(carry, inputs):
        model, messages, best, best_err = carry
        index, key = inputs
        if restart is not None:
            messages = _fresh_messages(key, n, mean.dtype)
        bp = belief_propagation(model, messages, tol=tol, max_sweeps=max_sweeps, damping=damping, criterion=criterion)
        d_second = (bp.pair_moment - second) * off
        d_mean = bp.magnetisation - mean
        err = jnp.sqrt(jnp.mean(d_mean**2) + jnp.sum(d_second**2) / (n * (n - 1)))
        better = (err < best_err) & (index >= burn_in)
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), model, best)
        new = Ising(model.J - lr_couplings * (d_second + l2 * model.J), model.h - lr_fields * d_mean)
        return (new, bp.messages, best, jnp.where(better, err, best_err)), err

    (_, _, best, best_err), history = jax.lax.scan(
        step, (initial, jnp.zeros((n, n), mean.dtype), initial, jnp.asarray(jnp.inf, mean.dtype)),
        (jnp.arange(iterations), keys))
    return BoltzmannFit(best, best_err, history)


def pseudo_likelihood(samples: jax.Array, *, l2: float = 1e-4, steps: int = 500, lr: float = 0.05) -> Ising:
    """Inverse Ising by maximising the pseudo-likelihood ``sum_i ln P(s_i | s_rest)`` (Adam, then
    symmetrised couplings): a cross-check of :func:`boltzmann_learning`.

    The mean over samples is taken over their distinct configurations, each weighted by its
    count: the same objective, and few spins repeat (200,000 samples of 8 spins are at most
    256 rows). ``samples`` are therefore concrete, not traced."""
    states, counts = np.unique(np.asarray(samples), axis=0, return_counts=True)
    return _pseudo_likelihood(jnp.asarray(states, jnp.result_type(float)), counts / counts.sum(), l2=l2, steps=steps, lr=lr)


@functools.partial(jax.jit, static_argnames=("steps",))
def _pseudo_likelihood(states: jax.Array, weights, *, l2: float, steps: int, lr: float) -> Ising:
    n = states.shape[1]
    off = 1.0 - jnp.eye(n, dtype=states.dtype)
    weights = jnp.asarray(weights, states.dtype)

    def loss(model):
        couplings = 0.5 * (model.J + model.J.T) * off
        local = states @ couplings + model.h
        return -weights @ jnp.sum(jax.nn.log_sigmoid(2 * states * local), axis=1) + l2 * jnp.sum(couplings**2)

    optimizer = optax.adam(lr)
    model = Ising(jnp.zeros((n, n), states.dtype), jnp.zeros(n, states.dtype))

    def step(carry, _):
        model, state = carry
        grads = jax.grad(loss)(model)
        updates, state = optimizer.update(grads, state)
        return (optax.apply_updates(model, updates), state), None

    (model, _), _ = jax.lax.scan(step, (model, optimizer.init(model)), None, length=steps)
    return Ising(0.5 * (model.J + model.J.T) * off, model.h)


@functools.partial(jax.jit, static_argnames=("iterations", "chains", "sweeps", "average_last"))
def boltzmann_learning_mcmc(
    samples: jax.Array, key: jax.Array, *, iterations: int = 1000, chains: int = 512, sweeps: int = 5,
    lr_couplings: float = 0.02, lr_fields: float = 0.05, l2: float = 1e-4, average_last: float = 0.5,
) -> BoltzmannFit:
    """Boltzmann-machine learning with Metropolis moments (persistent chains started at data
    samples), without the Bethe approximation.

    Use it where BP moments are wrong: strongly coupled clusters (groups of weights that flip
    together across solutions) make BP break the cluster's up-down symmetry, and learning with
    BP moments then stalls. The updates are centred: couplings follow the connected
    correlations, ``J <- J - lr_J (C_model - C_data + l2 J)`` with ``C = <s s> - <s><s>``, and
    the fields absorb the change of the couplings' mean field, ``h <- h - lr_h (m_model -
    m_data) - dJ m_data``. Uncentred updates (raw second moments, as in
    :func:`boltzmann_learning`) shift every local field by ``dJ m`` at each step; when many
    weights are polarised and correlated, that collective mode turns the model into a
    ferromagnet the chains cannot leave unless the coupling rate is tiny (on the shallow 20-10
    samples, 0.01 diverges), and a tiny rate leaves the couplings short of their values.

    The Monte-Carlo moments are noisy (about ``1 / sqrt(chains)`` per entry), so the returned
    model is the average of the iterates over the last ``average_last`` of the iterations
    (Polyak-Ruppert averaging), and ``rms_error`` is the mean of their RMS moment errors.
    """
    samples = jnp.asarray(samples, jnp.result_type(float))
    mean, second = sample_moments(samples)
    connected = second - jnp.outer(mean, mean)
    n = mean.shape[0]
    off = 1.0 - jnp.eye(n, dtype=mean.dtype)
    k0, k1 = jax.random.split(key)
    start = _independent_model(mean)
    chains_state = samples[jax.random.choice(k0, samples.shape[0], (chains,))]
    first_averaged = iterations - max(1, int(average_last * iterations))

    def step(carry, inputs):
        model, spins, total = carry
        key, index = inputs
        spins = _run_chains(model, spins, key, sweeps)[-1]
        model_mean, model_second = sample_moments(spins)
        d_couplings = -lr_couplings * ((model_second - jnp.outer(model_mean, model_mean) - connected) * off + l2 * model.J)
        d_fields = -lr_fields * (model_mean - mean) - d_couplings @ mean
        err = jnp.sqrt((jnp.sum(((model_second - second) * off) ** 2) + jnp.sum((model_mean - mean) ** 2)) / (n * n))
        total = jax.tree.map(lambda t, m: t + jnp.where(index >= first_averaged, m, 0.0), total, model)
        return (Ising(model.J + d_couplings, model.h + d_fields), spins, total), err

    zero = jax.tree.map(jnp.zeros_like, start)
    (_, _, total), history = jax.lax.scan(step, (start, chains_state, zero), (jax.random.split(k1, iterations), jnp.arange(iterations)))
    averaged = jax.tree.map(lambda t: t / (iterations - first_averaged), total)
    return BoltzmannFit(averaged, jnp.mean(history[first_averaged:]), history)
