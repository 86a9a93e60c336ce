"""The entropy landscape ``s(d)`` around a reference configuration, swept down and up in a field
``x`` with warm starts (by BP, or its distance curve by Metropolis chains), and its jumps and
hysteresis."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdl_jax.landscape.bp import _fresh_messages, belief_propagation, bethe_free_entropy, mean_energy
from mdl_jax.landscape.mcmc import _run_chains
from mdl_jax.landscape.models import Ising


class Landscape(NamedTuple):
    fields: jax.Array  # (S,) the x values in sweep order (down, then up)
    overlap: jax.Array  # (S,) q = (1/N) sum_i s*_i m_i
    distance: jax.Array  # (S,) d = (1 - q) / 2
    entropy: jax.Array  # (S,) s(d) per spin
    converged: jax.Array  # (S,) whether BP met its tolerance


def entropy_bound(distance: jax.Array) -> jax.Array:
    """``-d ln d - (1 - d) ln(1 - d)``: the entropy of all configurations at distance d."""
    d = jnp.clip(distance, 1e-12, 1 - 1e-12)
    return -d * jnp.log(d) - (1 - d) * jnp.log1p(-d)


def field_sweep(x_max: float = 3.0, step: float = 0.05) -> jax.Array:
    """``x`` from ``+x_max`` down to ``-x_max`` and back up, in steps of ``step``."""
    down = jnp.linspace(x_max, -x_max, int(round(2 * x_max / step)) + 1)
    return jnp.concatenate([down, down[::-1][1:]])


@jax.jit
def entropy_landscape(
    model: Ising, reference: jax.Array, fields: jax.Array, *, tol: float = 1e-4, max_sweeps: int = 1000,
    damping: float = 0.5, restart: jax.Array | None = None,
) -> Landscape:
    """The entropy landscape around ``reference`` (notes, section 3).

    At each field ``x`` (in the given order, each BP warm-started from the previous one) the
    model ``P_x(s) ~ exp(-E(s) + x sum_i s*_i s_i)`` is solved by BP, and

    .. math:: s = \\frac{1}{N}\\Big(\\ln Z_x + \\langle E \\rangle_x\\Big) - x q,

    the Shannon entropy per spin of ``P_x`` (``E`` without the x-field), which for independent
    unbiased spins is exactly :func:`entropy_bound` at ``d = (1 - q) / 2``.

    Without ``restart`` the whole sweep is one warm-started chain of BP solutions starting
    from zero messages. With a ``restart`` key each direction of a :func:`field_sweep` starts
    from fresh ``N(0, 0.01^2)`` messages at its first field (the authors' procedure: the up
    sweep is solved afresh from ``x = -x_max``, whose point is shared with the down sweep).
    """
    n = model.h.shape[0]
    reference = jnp.asarray(reference, model.h.dtype)

    def at_field(messages, x):
        tilted = Ising(model.J, model.h + x * reference)
        bp = belief_propagation(tilted, messages, tol=tol, max_sweeps=max_sweeps, damping=damping)
        q = reference @ bp.magnetisation / n
        entropy = (bethe_free_entropy(tilted, bp) + mean_energy(model, bp)) / n - x * q
        return bp.messages, (q, entropy, bp.change <= tol)

    if restart is None:
        _, (q, entropy, converged) = jax.lax.scan(at_field, jnp.zeros((n, n), model.h.dtype), fields)
    else:
        half = (fields.shape[0] + 1) // 2
        k_down, k_up = jax.random.split(restart)
        _, down = jax.lax.scan(at_field, _fresh_messages(k_down, n, model.h.dtype), fields[:half])
        _, up = jax.lax.scan(at_field, _fresh_messages(k_up, n, model.h.dtype), fields[half - 1:])
        q, entropy, converged = (jnp.concatenate([a, b[1:]]) for a, b in zip(down, up))
    return Landscape(fields, q, (1 - q) / 2, entropy, converged)


class MetropolisLandscape(NamedTuple):
    fields: jax.Array  # (S,) the x values in sweep order
    overlap: jax.Array  # (S,) q, averaged over the chains and the measured sweeps
    distance: jax.Array  # (S,) d = (1 - q) / 2


@functools.partial(jax.jit, static_argnames=("chains", "sweeps", "measure"))
def metropolis_landscape(
    model: Ising, reference: jax.Array, fields: jax.Array, key: jax.Array, *, chains: int = 32, sweeps: int = 20,
    measure: int = 10,
) -> MetropolisLandscape:
    """The distance curve of :func:`entropy_landscape` simulated instead of solved by BP.

    Persistent Metropolis chains of ``P_x`` start at the reference and are carried from each
    field to the next (``sweeps`` sweeps per field; q averaged over the last ``measure`` of
    them and over the chains). A check without the Bethe approximation: a jump or loop that
    BP shows and the chains do not is one of BP's fixed points, not a property of the model
    (the chains are stuck in a metastable state of a real first-order transition too, so they
    show its loop, though they may take a few field steps to flip). Gives no entropy.
    """
    if not 0 < measure <= sweeps:
        raise ValueError(f"measure={measure} must be between 1 and sweeps={sweeps}")
    reference = jnp.asarray(reference, model.h.dtype)

    def at_field(spins, inputs):
        x, k = inputs
        states = _run_chains(Ising(model.J, model.h + x * reference), spins, k, sweeps)
        return states[-1], jnp.mean(states[sweeps - measure:] @ reference) / reference.shape[0]

    start = jnp.tile(reference, (chains, 1))
    _, q = jax.lax.scan(at_field, start, (fields, jax.random.split(key, fields.shape[0])))
    return MetropolisLandscape(fields, q, (1 - q) / 2)


def _directions(landscape: Landscape | MetropolisLandscape) -> tuple[jax.Array, jax.Array]:
    """``d`` on the down sweep and on the up sweep of a :func:`field_sweep` (both include the
    turning field ``-x_max``)."""
    half = (landscape.fields.shape[0] + 1) // 2
    return landscape.distance[:half], landscape.distance[half - 1:]


@jax.jit
def distance_jumps(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """Largest jump of d between neighbouring fields on the down sweep and on the up sweep."""
    down, up = _directions(landscape)
    return jnp.stack([jnp.max(jnp.abs(jnp.diff(down))), jnp.max(jnp.abs(jnp.diff(up)))])


@jax.jit
def hysteresis(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """Largest gap in d between the down and the up sweep at the same field."""
    down, up = _directions(landscape)
    return jnp.max(jnp.abs(down - up[::-1]))


@jax.jit
def distance_after_jump(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """``d`` just after the largest jump of the down sweep (x falling, the configurations
    leaving the reference): where the landscape resumes beyond its gap."""
    down, _ = _directions(landscape)
    return down[jnp.argmax(jnp.abs(jnp.diff(down))) + 1]
