"""Maximum-entropy (Ising) models of weight samples and their entropy landscape.

The least structured model of binary weight configurations ``s in {-1, +1}^N`` that
reproduces their means and pairwise correlations is

.. math:: P(s) = \\exp\\Big(\\sum_{i<j} J_{ij} s_i s_j + \\sum_i h_i s_i\\Big) / Z

(Zou & Huang 2021; ``effective-model-notes.md``). Here: belief propagation (BP) on the dense
graph, vectorised over all directed edges; Bethe free energy, mean energy and entropy;
inverse Ising by Boltzmann-machine learning with BP moments, cross-checked by
pseudo-likelihood and by Metropolis sampling; and the entropy landscape ``s(d)`` around a
reference configuration, swept down and up in a field ``x`` with warm starts.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Ising(NamedTuple):
    J: jax.Array  # (N, N) symmetric couplings, zero diagonal
    h: jax.Array  # (N,) fields


class BPResult(NamedTuple):
    messages: jax.Array  # (N, N): messages[i, j] = cavity magnetisation m_{i->j}
    magnetisation: jax.Array  # (N,)
    pair_moment: jax.Array  # (N, N) <s_i s_j> (diagonal 1)
    sweeps: jax.Array  # BP sweeps used
    change: jax.Array  # last change of the messages (largest or mean, as the criterion)


def _cavity_terms(model: Ising, messages: jax.Array):
    """``x[k, i] = tanh(J_ki) m_{k->i}`` and the full cavity fields ``H_i``."""
    x = jnp.tanh(model.J) * messages
    fields = model.h + jnp.sum(jnp.arctanh(x), axis=0)
    return x, fields


@functools.partial(jax.jit, static_argnames=("criterion",))
def belief_propagation(
    model: Ising, messages: jax.Array | None = None, *, tol: float = 1e-4, max_sweeps: int = 1000,
    damping: float = 0.0, criterion: str = "max",
) -> BPResult:
    """Iterates ``m_{i->j} = tanh(h_i + sum_{k != j} atanh(tanh(J_ki) m_{k->i}))`` to a fixed point.

    All ``N (N - 1)`` directed messages are updated at once (a parallel sweep), with optional
    damping, until the change of the messages is at most ``tol`` or after ``max_sweeps`` sweeps.

    Args:
      model: couplings and fields.
      messages: starting messages (a warm start), default zero.
      tol: convergence threshold on the change of the messages.
      max_sweeps: sweep budget.
      damping: weight of the old message in each update (0: none).
      criterion: ``"max"`` (largest change of a message) or ``"mean"`` (mean absolute change,
        the authors' rule in their Boltzmann learning).
    """
    if criterion not in ("max", "mean"):
        raise ValueError(f"criterion={criterion!r}: use 'max' (largest message change) or 'mean' (mean absolute change)")
    reduce = jnp.max if criterion == "max" else jnp.mean
    n = model.h.shape[0]
    off_diagonal = 1.0 - jnp.eye(n, dtype=model.h.dtype)
    messages = jnp.zeros((n, n), model.h.dtype) if messages is None else messages

    def update(messages):
        x, fields = _cavity_terms(model, messages)
        new = jnp.tanh(fields[:, None] - jnp.arctanh(x).T) * off_diagonal
        return damping * messages + (1 - damping) * new

    def body(carry):
        messages, sweep, _ = carry
        new = update(messages)
        return new, sweep + 1, reduce(jnp.abs(new - messages))

    messages, sweeps, change = jax.lax.while_loop(
        lambda c: (c[1] < max_sweeps) & (c[2] > tol), body, (messages, jnp.int32(0), jnp.asarray(jnp.inf, model.h.dtype))
    )
    _, fields = _cavity_terms(model, messages)
    t = jnp.tanh(model.J)
    product = messages * messages.T
    pair = (t + product) / (1 + t * product)
    pair = pair * off_diagonal + jnp.eye(n, dtype=pair.dtype)
    return BPResult(messages, jnp.tanh(fields), pair, sweeps, change)


def bethe_free_entropy(model: Ising, bp: BPResult) -> jax.Array:
    """``ln Z_Bethe = sum_i ln Z_i - sum_{i<j} ln Z_ij`` (so ``F_Bethe = -ln Z_Bethe``).

    ``Z_i = 2 cosh(H_i) prod_k cosh(J_ik) sqrt(1 - x_ki^2)``, ``x_ki = tanh(J_ik) m_{k->i}``;
    ``Z_ij = cosh(J_ij) (1 + tanh(J_ij) m_{i->j} m_{j->i})``.
    """
    n = model.h.shape[0]
    off = 1.0 - jnp.eye(n, dtype=model.h.dtype)
    x, fields = _cavity_terms(model, bp.messages)
    site = jnp.log(2 * jnp.cosh(fields)) + jnp.sum((jnp.log(jnp.cosh(model.J)) + 0.5 * jnp.log1p(-(x**2))) * off, axis=0)
    edge = (jnp.log(jnp.cosh(model.J)) + jnp.log1p(jnp.tanh(model.J) * bp.messages * bp.messages.T)) * off
    return jnp.sum(site) - 0.5 * jnp.sum(edge)


def mean_energy(model: Ising, bp: BPResult) -> jax.Array:
    """``<E> = -sum_{i<j} J_ij <s_i s_j> - sum_i h_i m_i`` under the BP moments."""
    return -0.5 * jnp.sum(model.J * bp.pair_moment * (1 - jnp.eye(model.h.shape[0]))) - model.h @ bp.magnetisation


def bethe_entropy(model: Ising, bp: BPResult) -> jax.Array:
    """Shannon entropy ``S = ln Z + <E>`` (beta = 1) in the Bethe approximation."""
    return bethe_free_entropy(model, bp) + mean_energy(model, bp)


def exact_moments(model: Ising) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Magnetisations, pair moments and ``ln Z`` by enumerating all ``2^N`` states (N <= 20)."""
    n = model.h.shape[0]
    states = 1 - 2 * ((jnp.arange(2**n)[:, None] >> jnp.arange(n)) & 1).astype(model.h.dtype)
    log_weights = 0.5 * jnp.einsum("si,ij,sj->s", states, model.J, states) + states @ model.h
    log_z = jax.scipy.special.logsumexp(log_weights)
    p = jnp.exp(log_weights - log_z)
    return p @ states, jnp.einsum("s,si,sj->ij", p, states, states), log_z


def sample_moments(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Means and second moments ``<s_i s_j>`` of ``(n, N)`` samples in {-1, +1}."""
    samples = jnp.asarray(samples, jnp.result_type(float))
    return samples.mean(0), samples.T @ samples / samples.shape[0]


BP_STARTS = ("independent", "zero")  # where Boltzmann learning with BP moments may start


def _independent_model(mean: jax.Array) -> Ising:
    """No couplings, fields ``atanh(m)``: the independent spins with the data's means (clipped
    to |m| <= 0.99, so that frozen spins get a finite field)."""
    n = mean.shape[0]
    return Ising(jnp.zeros((n, n), mean.dtype), jnp.arctanh(jnp.clip(mean, -0.99, 0.99)))


class BoltzmannFit(NamedTuple):
    model: Ising
    rms_error: jax.Array  # RMS moment error of the returned iterate
    history: jax.Array  # RMS error at every iteration


def _fresh_messages(key: jax.Array, n: int, dtype) -> jax.Array:
    """BP messages drawn from ``N(0, 0.01^2)`` (zero diagonal): the authors' restart."""
    return 0.01 * jax.random.normal(key, (n, n), dtype) * (1.0 - jnp.eye(n, dtype=dtype))


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


@functools.partial(jax.jit, static_argnames=("steps",))
def pseudo_likelihood(samples: jax.Array, *, l2: float = 1e-4, steps: int = 500, lr: float = 0.05) -> Ising:
    """Inverse Ising by maximising the pseudo-likelihood ``sum_i ln P(s_i | s_rest)`` (Adam, then
    symmetrised couplings): a cross-check of :func:`boltzmann_learning`."""
    samples = jnp.asarray(samples, jnp.result_type(float))
    n = samples.shape[1]
    off = 1.0 - jnp.eye(n, dtype=samples.dtype)

    def loss(model):
        couplings = 0.5 * (model.J + model.J.T) * off
        local = samples @ couplings + model.h
        return -jnp.mean(jnp.sum(jax.nn.log_sigmoid(2 * samples * local), axis=1)) + l2 * jnp.sum(couplings**2)

    optimizer = optax.adam(lr)
    model = Ising(jnp.zeros((n, n), samples.dtype), jnp.zeros(n, samples.dtype))

    def step(carry, _):
        model, state = carry
        grads = jax.grad(loss)(model)
        updates, state = optimizer.update(grads, state)
        return (optax.apply_updates(model, updates), state), None

    (model, _), _ = jax.lax.scan(step, (model, optimizer.init(model)), None, length=steps)
    return Ising(0.5 * (model.J + model.J.T) * off, model.h)


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


def connected_moments(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Means and connected correlations ``<s_i s_j> - <s_i><s_j>`` of ``(n, N)`` samples."""
    mean, second = sample_moments(samples)
    return mean, second - jnp.outer(mean, mean)


def moment_errors(samples, reference) -> tuple[jax.Array, jax.Array]:
    """RMS differences of the means and of the off-diagonal connected correlations between two
    sets of samples (e.g. model vs data). Either may instead be given as its
    :func:`connected_moments`, so that the moments of a large data set are computed once."""
    (m1, c1), (m2, c2) = (x if isinstance(x, tuple) else connected_moments(x) for x in (samples, reference))
    off = 1.0 - jnp.eye(m1.shape[0], dtype=m1.dtype)
    return jnp.sqrt(jnp.mean((m1 - m2) ** 2)), jnp.sqrt(jnp.sum(((c1 - c2) * off) ** 2) / jnp.sum(off))


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


def distance_jumps(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """Largest jump of d between neighbouring fields on the down sweep and on the up sweep."""
    down, up = _directions(landscape)
    return jnp.stack([jnp.max(jnp.abs(jnp.diff(down))), jnp.max(jnp.abs(jnp.diff(up)))])


def hysteresis(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """Largest gap in d between the down and the up sweep at the same field."""
    down, up = _directions(landscape)
    return jnp.max(jnp.abs(down - up[::-1]))


def distance_after_jump(landscape: Landscape | MetropolisLandscape) -> jax.Array:
    """``d`` just after the largest jump of the down sweep (x falling, the configurations
    leaving the reference): where the landscape resumes beyond its gap."""
    down, _ = _directions(landscape)
    return down[jnp.argmax(jnp.abs(jnp.diff(down))) + 1]


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


def random_ising(key: jax.Array, n: int, *, coupling: float, field: float, dtype=jnp.float64) -> Ising:
    """A dense Ising model with Gaussian couplings ``N(0, coupling^2)`` and fields ``N(0, field^2)``."""
    kj, kh = jax.random.split(key)
    upper = jnp.triu(coupling * jax.random.normal(kj, (n, n), dtype), 1)
    return Ising(upper + upper.T, field * jax.random.normal(kh, (n,), dtype))


def tree_ising(key: jax.Array, n: int, *, coupling: float, field: float, dtype=jnp.float64) -> Ising:
    """An Ising model on a random tree (each spin i > 0 coupled to one earlier spin)."""
    kp, kj, kh = jax.random.split(key, 3)
    parents = np.asarray(jax.random.randint(kp, (n - 1,), 0, np.arange(1, n)))
    weights = coupling * jax.random.normal(kj, (n - 1,), dtype)
    J = jnp.zeros((n, n), dtype).at[np.arange(1, n), parents].set(weights)
    return Ising(J + J.T, field * jax.random.normal(kh, (n,), dtype))


_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _moment_check(model: Ising, spins: jax.Array, data: tuple, key: jax.Array, *, chains: int, sweeps: int) -> dict:
    """The fitted model's moments by Metropolis chains started at data samples, against the
    data's (``data``: its :func:`connected_moments`), the check's own noise, and a model
    without couplings."""
    k_init, k_run = jax.random.split(key)
    starts = spins[jax.random.choice(k_init, spins.shape[0], (chains,))]
    check = metropolis(model, k_run, chains=chains, sweeps=sweeps, burn_in=sweeps // 2, init=starts)
    mean_error, correlation_error = moment_errors(check, data)
    half = check.shape[0] // 2  # rows are chain-major: the first half comes from the first half of the chains
    _, noise = moment_errors(check[:half], check[half:])  # about twice the check's own noise
    _, independent_error = moment_errors((data[0], jnp.zeros_like(data[1])), data)  # the data's means, no correlations
    return {"metropolis_mean_error": float(mean_error), "metropolis_correlation_error": float(correlation_error),
            "metropolis_correlation_noise": float(noise) / 2, "independent_correlation_error": float(independent_error)}


FITS = ("mcmc", "bp")  # fit_and_examine's methods


def fit_and_examine(spins: jax.Array, method: str, key: jax.Array, *, fit_options: dict, examine_options: dict,
                    data: tuple | None = None) -> dict:
    """Fits an Ising model to ``spins`` by ``method`` with ``fit_options`` and examines the fit
    with ``examine_options`` (:func:`examine`): ``{"fit": method, "rms_moment_error", **examined}``.

    ``method``: ``"bp"``, :func:`boltzmann_learning` (its restarts drawn from the key), or
    ``"mcmc"``, :func:`boltzmann_learning_mcmc`. ``data``: the spins' :func:`connected_moments`
    when already computed (e.g. for a second fit of the same spins). Warns (``RuntimeWarning``)
    when the fit misses the data's connected correlations by more than a model without
    couplings and by more than three times the check's noise: a diverged fit (a persistent-chain
    fit can fall into a ferromagnetic state whose chains no longer move; one key in the quick
    effective model does, on 675 spins).
    """
    if method not in FITS:
        raise ValueError(f"unknown fit {method!r}; choose one of {', '.join(FITS)}")
    k_fit, k_examine = jax.random.split(key)
    fit = (boltzmann_learning(spins, restart=k_fit, **fit_options) if method == "bp"
           else boltzmann_learning_mcmc(spins, k_fit, **fit_options))
    data = connected_moments(spins) if data is None else data
    examined = examine(fit.model, spins, data, k_examine, **examine_options)
    error, baseline = examined["metropolis_correlation_error"], examined["independent_correlation_error"]
    if error > max(baseline, 3 * examined["metropolis_correlation_noise"]):
        warnings.warn(f"the {method} fit of {spins.shape[1]} spins misses the data's connected correlations by {error:.3g}, more "
                      f"than a model without couplings ({baseline:.3g}): it has likely diverged (its moment error rose from "
                      f"{float(fit.history[0]):.3g} to {float(fit.history[-1]):.3g}); fit again with another key or smaller rates",
                      RuntimeWarning, stacklevel=2)
    return {"fit": method, "rms_moment_error": float(fit.rms_error), **examined}


def describe(fit: dict) -> str:
    """One line on an examined fit (:func:`fit_and_examine`): its entropy, jump and loops."""
    return (f"{fit['fit']}: max s {fit['max_entropy']:.3f}, BP jump {fit['max_distance_jump']:.3f} loop {fit['hysteresis']:.3f}, "
            f"chains loop {fit.get('metropolis_hysteresis', np.nan):.3f}")


def fit_parts(samples, parts: dict, methods: Sequence[str], seed: int, *, fit_options: dict, examine_options: dict,
              comparison_curves: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Fits and examines the columns ``parts[name]`` of ``samples`` by each of ``methods``
    (:func:`fit_and_examine`, with ``fit_options[method]`` and ``examine_options[method]``).

    The fits of the ``i``-th part share the key ``PRNGKey(seed + i)`` and the data's moments.
    Returns ``{name: first fit}``, the second (if any) under ``"comparison"``, without its
    curves unless ``comparison_curves``; ``log`` gets one line per part.
    """
    out = {}
    for i, (name, columns) in enumerate(parts.items()):
        tic, spins = time.perf_counter(), jnp.asarray(samples[:, columns], jnp.float32)
        data, key = connected_moments(spins), jax.random.PRNGKey(seed + i)  # every fit on the same references
        fits = [fit_and_examine(spins, m, key, data=data, fit_options=fit_options[m], examine_options=examine_options[m])
                for m in methods]
        if log is not None:
            log(f"{name}: {time.perf_counter() - tic:.0f} s; " + "; ".join(map(describe, fits)))
        if len(fits) > 1 and not comparison_curves:
            fits[1] = {k: v for k, v in fits[1].items() if k not in ("curves", "metropolis_curves")}
        out[name] = {**fits[0], "comparison": fits[1]} if len(fits) > 1 else fits[0]
    return out


def fits_by_method(part: dict) -> dict[str, dict]:
    """One part of :func:`fit_parts`' result as ``{method: examined fit}``."""
    return {f["fit"]: f for f in (part, part.get("comparison")) if f}


def examine(
    model: Ising, spins: jax.Array, data: tuple, key: jax.Array, *, references: int, field_step: float = 0.05,
    verify_chains: int = 128, verify_sweeps: int = 200, check_references: int = 5, check_chains: int = 32,
    check_sweeps: int = 20, bp: dict | None = None,
) -> dict:
    """Everything the effective-model study asks of a fitted ``model`` of ``spins`` (whose
    :func:`connected_moments` are ``data``), as host numbers:

    * its moments, by ``verify_chains`` Metropolis chains started from samples, against the
      data's, beside the check's own noise (half the chains against the other half, halved)
      and a model without couplings; the :func:`reversed_state_fraction` of as many chains;
    * ``|J|`` and ``|h|``: means and the 5-25-50-75-95 % quantiles;
    * the entropy landscape ``s(d)`` by BP (:func:`entropy_landscape` with the options ``bp``:
      ``tol``, ``max_sweeps``, ``damping``, ``restart`` true for fresh messages per direction)
      around ``references`` samples from low to high model energy, field ``x`` from +3 to -3
      and back: mean of the largest entropy, largest jump of ``d``, ``d`` just after it, and
      widest loop, BP's convergence, every curve;
    * for ``check_references`` of those references the distance curve simulated by Metropolis
      chains along the same sweep (:func:`metropolis_landscape`), with its largest jump and
      loop (largest and median over the references), so that a jump of the model can be told
      from one of BP's fixed points.
    """
    bp = dict(bp or {})
    k_check, k_simulate, k_reversed, k_bp = jax.random.split(key, 4)
    energy = -0.5 * jnp.einsum("si,ij,sj->s", spins, model.J, spins) - spins @ model.h
    order = np.argsort(np.asarray(energy))
    picks = order[np.linspace(0, len(order) - 1, references).astype(int)]  # low to high energy
    fields = field_sweep(3.0, field_step)
    restarts = jax.random.split(k_bp, references) if bp.pop("restart", False) else [None] * references
    sweeps = [entropy_landscape(model, spins[i], fields, restart=k, **bp) for i, k in zip(picks, restarts)]
    rows = np.unique(np.linspace(0, references - 1, min(check_references, references)).astype(int))
    simulated = [metropolis_landscape(model, spins[picks[r]], fields, k, chains=check_chains, sweeps=check_sweeps,
                                      measure=max(1, check_sweeps // 2))
                 for r, k in zip(rows, jax.random.split(k_simulate, len(rows)))]
    couplings = np.abs(np.asarray(model.J))[~np.eye(spins.shape[1], dtype=bool)]
    fields_abs = np.abs(np.asarray(model.h))
    each = lambda curves, measure: np.array([np.max(np.asarray(measure(c))) for c in curves])
    jumps, loops_bp = each(sweeps, distance_jumps), each(sweeps, hysteresis)
    out = {
        "samples": spins.shape[0], **_moment_check(model, spins, data, k_check, chains=verify_chains, sweeps=verify_sweeps),
        "reversed_state_fraction": float(reversed_state_fraction(model, spins, k_reversed, chains=verify_chains, sweeps=verify_sweeps)),
        "mean_abs_J": float(couplings.mean()), "mean_abs_h": float(fields_abs.mean()),
        "abs_J_quantiles": np.quantile(couplings, _QUANTILES), "abs_h_quantiles": np.quantile(fields_abs, _QUANTILES),
        "max_entropy": float(np.mean([np.max(np.asarray(s.entropy)) for s in sweeps])),
        "max_distance_jump": float(jumps.max()), "d_after_jump": float(distance_after_jump(sweeps[int(jumps.argmax())])),
        "hysteresis": float(loops_bp.max()), "hysteresis_median": float(np.median(loops_bp)),
        "bp_converged": float(np.mean([np.mean(np.asarray(s.converged)) for s in sweeps])),
        "curves": [{"x": s.fields, "d": s.distance, "s": s.entropy} for s in sweeps],
    }
    if simulated:
        checked, loops = [sweeps[r] for r in rows], each(simulated, hysteresis)
        out.update(checked_references=len(simulated), checked_bp_jump=float(each(checked, distance_jumps).max()),
                   checked_bp_hysteresis=float(each(checked, hysteresis).max()),
                   metropolis_max_distance_jump=float(each(simulated, distance_jumps).max()),
                   metropolis_hysteresis=float(loops.max()), metropolis_hysteresis_median=float(np.median(loops)),
                   metropolis_hysteresis_each=loops, metropolis_curves=[{"x": c.fields, "d": c.distance} for c in simulated])
    return out


def shallow_verdicts(shallow: dict, deep_chain_loops, *, authors: dict | None = None) -> dict:
    """The shallow-landscape claim judged two ways, from :func:`examine` results.

    ``authors_procedure`` (the examined fit made by the authors' procedure, ``authors``):
    passes if its BP jump and its chains' loop are both at least 0.3. ``faithful`` (the
    headline fit ``shallow`` and the chains' loops ``deep_chain_loops`` of the deep fits): the
    fit matches the data if its correlation error is at most 1.5x the check's noise and 0.3x
    the no-coupling baseline; the claim is reproduced only if, moreover, the median chain loop
    is at least 3x the largest deep one and the loop is at least 0.1 on most references.
    Thresholds as fixed before the runs.
    """
    out = {}
    if authors is not None:
        out["shallow_authors_procedure"] = {
            "bp_jump": authors["max_distance_jump"], "chain_loop": authors.get("metropolis_hysteresis"),
            "correlation_error": authors["metropolis_correlation_error"],
            "no_coupling_error": authors["independent_correlation_error"],
            "reversed_state_fraction": authors["reversed_state_fraction"], "d_after_jump": authors["d_after_jump"],
            "passes": bool(authors["max_distance_jump"] >= 0.3 and authors.get("metropolis_hysteresis", 0.0) >= 0.3)}
    loops = np.asarray(shallow.get("metropolis_hysteresis_each", []))
    deep = float(np.max(deep_chain_loops)) if len(deep_chain_loops) else None
    error = shallow["metropolis_correlation_error"]
    matches = error <= 1.5 * shallow["metropolis_correlation_noise"] and error <= 0.3 * shallow["independent_correlation_error"]
    if not matches:
        verdict = "undecided: the fit does not match the data"
    elif len(loops) < 5 or deep is None:
        verdict = "undecided: fewer than 5 shallow references or no deep loop simulated"
    elif np.median(loops) >= 3 * deep and np.mean(loops >= 0.1) > 0.5:
        verdict = "reproduced"
    else:
        verdict = "not reproduced by a fit that matches the data"
    out["shallow_faithful"] = {
        "bp_loop_median": shallow["hysteresis_median"], "bp_loop_max": shallow["hysteresis"],
        "chain_loop_median": float(np.median(loops)) if len(loops) else None,
        "chain_loop_max": float(loops.max()) if len(loops) else None, "deep_chain_loop_max": deep,
        "chain_references": len(loops), "correlation_error": error, "check_noise": shallow["metropolis_correlation_noise"],
        "no_coupling_error": shallow["independent_correlation_error"], "fit_matches_data": bool(matches), "verdict": verdict}
    return out
