"""Online SGD of teacher-student committees: many runs side by side on one stream of inputs,
exactly one-sample SGD taken a chunk of samples at a time (the simulations of Fig. 4)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax.online.committee import Committee
from mdl_jax.online.integrals import g, g_prime


class Simulation(NamedTuple):
    steps: jax.Array  # (n,) sample index nu of each measurement
    eps_g: jax.Array  # (n,) test error; (runs, n) for a group of simulate_runs
    xi_hat: jax.Array  # (d, p) final student patterns; (runs, d, p) for a group


def simulate_sgd(
    key: jax.Array, teacher: Committee, student: Committee, eta: float | jax.Array,
    save_steps: jax.Array, *, n_test: int = 10_000, block: int = 256, chunk: int = 32, test_key: jax.Array | None = None,
) -> Simulation:
    """Online SGD on the student's ``xi_hat``, one fresh sample per step: one run of
    :func:`simulate_runs` (the arguments are the same, for a single teacher-student pair)."""
    expand = lambda c: jax.tree.map(lambda a: a[None], c)
    (out,) = simulate_runs(key, [(expand(teacher), expand(student))], eta, save_steps, n_test=n_test, block=block,
                           chunk=chunk, test_key=test_key)
    return Simulation(out.steps, out.eps_g[0], out.xi_hat[0])


class _SideBySide(NamedTuple):
    """Runs whose modes sit side by side: the patterns of every run are one ``(d, P)`` matrix,
    the modes of group ``c`` (``runs_c`` runs of ``p_c`` modes) one slice of its columns."""

    w_teacher: jax.Array  # (all runs x k, d), over sqrt d
    couplings: list[jax.Array]  # per group (runs, m, p): lambda = coupling @ xi_hat^T x
    kernel: jax.Array  # (all runs, m, m): K = c c^T of each run's coupling, fixed while xi_hat learns
    runs: list[int]
    modes: list[int]
    eta: jax.Array

    @classmethod
    def of(cls, groups, eta) -> "_SideBySide":
        d = groups[0][1].xi_hat.shape[1]
        w_teacher = jnp.concatenate([jax.vmap(Committee.weights)(t).reshape(-1, d) for t, _ in groups]) / math.sqrt(d)
        couplings = [s.xi * s.sigma[:, None, :] / math.sqrt(d) for _, s in groups]
        kernel = jnp.concatenate([jnp.einsum("rmp,rnp->rmn", c, c) for c in couplings])
        return cls(w_teacher, couplings, kernel, [c.shape[0] for c in couplings], [c.shape[2] for c in couplings],
                   jnp.asarray(eta, w_teacher.dtype))

    def slices(self):
        edges = np.cumsum([0] + [r * p for r, p in zip(self.runs, self.modes)])
        return zip(edges[:-1], edges[1:], self.runs, self.modes)

    def labels(self, x: jax.Array) -> jax.Array:
        """Teacher outputs, ``(n, all runs)``."""
        return jnp.mean(g(x @ self.w_teacher.T).reshape(x.shape[0], sum(self.runs), -1), axis=2)

    def fields(self, h: jax.Array) -> list[jax.Array]:
        """``h = xi_hat^T x`` side by side ``(..., P)`` -> the fields of each group ``(..., runs, m)``."""
        return [jnp.einsum("...rp,rmp->...rm", h[..., lo:hi].reshape(*h.shape[:-1], r, p), c)
                for (lo, hi, r, p), c in zip(self.slices(), self.couplings)]

    def chunk_step(self, xi_hat: jax.Array, inputs) -> tuple[jax.Array, None]:
        """SGD on the samples of one chunk, one at a time, in the space of the fields.

        With ``G = X X^T`` and ``K_r = c_r c_r^T`` (``m x m`` per run), the fields of sample
        ``i`` after the updates ``xi_hat_r -= (eta/m) x_j delta_jr^T c_r`` of the samples
        ``j < i`` are ``lambda_ir = lambda0_ir - (eta/m) K_r sum_j G_ij delta_jr``, where
        ``delta_jr = e_jr g'(lambda_jr)`` has ``m`` numbers per run whatever its modes. So
        each sample touches ``chunk x runs x m`` numbers in one loop for every mode count, and
        the patterns are updated once, ``xi_hat -= X^T U`` with ``U_r = (eta/m) delta_r c_r``.
        Inactive samples take no step."""
        x, y, active = inputs  # (chunk, d), (chunk, all runs), (chunk,)
        lam0 = jnp.concatenate(self.fields(x @ xi_hat), axis=1)  # (chunk, runs, m)
        gram, m = x @ x.T, lam0.shape[-1]
        rate = self.eta / m
        kernel = rate * self.kernel  # (runs, m, m)

        def sample(i, delta):  # (chunk, runs, m): delta of the samples before i, zero from i on
            seen = jnp.einsum("j,jrm->rm", gram[i], delta)
            lam = lam0[i] - sum(kernel[:, :, b] * seen[:, None, b] for b in range(m))  # K seen, written out: no kernel call
            errors = jnp.mean(g(lam), axis=1) - y[i]
            return delta.at[i].set(jnp.where(active[i], errors[:, None] * g_prime(lam), 0.0))

        # A rolled loop: unrolled, XLA:CPU fuses across samples and recomputes (slower, and slow to compile).
        delta = jax.lax.fori_loop(0, x.shape[0], sample, jnp.zeros_like(lam0))
        edges = np.cumsum([0] + self.runs)
        u = jnp.concatenate([rate * jnp.einsum("jrm,rmp->jrp", delta[:, lo:hi], c).reshape(x.shape[0], -1)
                             for lo, hi, c in zip(edges[:-1], edges[1:], self.couplings)], axis=1)
        return xi_hat - x.T @ u, None

    def test_error(self, xi_hat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        """``eps_g`` of every run on inputs ``x`` with teacher outputs ``y``."""
        weights = jnp.concatenate([w.reshape(x.shape[1], -1) for w in self.fields(xi_hat)], axis=1)  # (d, runs m)
        y_hat = jnp.mean(g(x @ weights).reshape(x.shape[0], sum(self.runs), -1), axis=2)
        return 0.5 * jnp.mean((y_hat - y) ** 2, axis=0)


def simulate_runs(
    key: jax.Array, groups, eta: float | jax.Array, save_steps: jax.Array, *,
    n_test: int = 10_000, block: int = 256, chunk: int = 32, test_key: jax.Array | None = None,
) -> list[Simulation]:
    """Online SGD of many teacher-student runs that see one stream of inputs (common random numbers).

    Each run learns its student's ``xi_hat`` by SGD on its own teacher's labels of the shared
    samples ``x_nu ~ N(0, I_d)``, so the runs of one call are correlated only through the
    inputs. Drawing the inputs once for all runs, and taking ``chunk`` samples at once
    (:meth:`_SideBySide.chunk_step`: exactly one-sample-at-a-time SGD), make a step cost
    about its arithmetic. Samples are drawn ``block`` at a time; the stream of sample ``nu``
    depends only on ``(key, nu // block)``, whatever the saves or the runs.

    Args:
      key: randomness of the training samples (and of fresh test samples).
      groups: ``(teachers, students)`` pairs of :class:`Committee` with a leading run axis,
        one pair per mode count (the students' ``xi``, ``sigma`` are their teachers'); every
        run has the same ``d`` and ``m = k``.
      eta: learning rate; or a schedule, one rate per save (``eta[i]`` for the samples from
        ``save_steps[i - 1]`` up to ``save_steps[i]``).
      save_steps: increasing sample counts ``nu`` at which ``eps_g`` is measured (``t = nu / d``).
      n_test: test samples per measurement.
      block, chunk: samples drawn, and taken, at once (``chunk`` divides ``block``).
      test_key: measure every ``eps_g`` on one fixed set of ``n_test`` samples drawn from it
        (the authors' protocol), else on fresh samples at each measurement.

    Returns:
      One :class:`Simulation` per group: ``eps_g`` (runs, n) and ``xi_hat`` (runs, d, p).
    """
    if block % chunk:
        raise ValueError(f"chunk = {chunk} must divide block = {block}")
    runs, (d, dtype) = _SideBySide.of(groups, eta), (groups[0][1].xi_hat.shape[1], groups[0][1].xi_hat.dtype)
    if runs.eta.ndim and runs.eta.shape != save_steps.shape:
        raise ValueError(f"eta must be a scalar or one value per save (the rate of the samples before it), "
                         f"shape {tuple(save_steps.shape)}; got {tuple(runs.eta.shape)}")
    k_train, k_test = jax.random.split(key)

    def run_to(runs, xi_hat, start, stop):
        """Samples ``start .. stop - 1``; a block cut by a save is taken twice, each time masked."""

        def per_block(b, xi_hat):
            x = jax.random.normal(jax.random.fold_in(k_train, b), (block, d), dtype)
            index = b * block + jnp.arange(block)
            split = lambda a: a.reshape(block // chunk, chunk, *a.shape[1:])
            return jax.lax.scan(runs.chunk_step, xi_hat, (split(x), split(runs.labels(x)), split((index >= start) & (index < stop))))[0]

        return jax.lax.fori_loop(start // block, (stop + block - 1) // block, per_block, xi_hat)

    fixed = None if test_key is None else jax.random.normal(test_key, (n_test, d), dtype)
    fixed_labels = None if fixed is None else runs.labels(fixed)  # once

    def interval(carry, index):
        xi_hat, start = carry
        now = runs if runs.eta.ndim == 0 else runs._replace(eta=runs.eta[index])  # a schedule: this interval's rate
        xi_hat = run_to(now, xi_hat, start, save_steps[index])
        x = jax.random.normal(jax.random.fold_in(k_test, index), (n_test, d), dtype) if fixed is None else fixed
        return (xi_hat, save_steps[index]), runs.test_error(xi_hat, x, runs.labels(x) if fixed is None else fixed_labels)

    xi_hat0 = jnp.concatenate([jnp.swapaxes(s.xi_hat, 0, 1).reshape(d, -1) for _, s in groups], axis=1)  # (d, P)
    (xi_hat, _), eps = jax.lax.scan(interval, (xi_hat0, jnp.zeros((), save_steps.dtype)), jnp.arange(len(save_steps)))
    eps_groups = jnp.split(eps.T, np.cumsum(runs.runs)[:-1])
    patterns = [jnp.swapaxes(xi_hat[:, lo:hi].reshape(d, r, p), 0, 1) for lo, hi, r, p in runs.slices()]
    return [Simulation(save_steps, e, x) for e, x in zip(eps_groups, patterns)]


def _shard_seeds(keys: jax.Array, axis: int = 0) -> jax.Array:
    """``keys`` spread over the local devices along their seed ``axis`` when the devices divide
    it, as they are otherwise. With one CPU device per core each core simulates its share of
    the independent runs (1.4x for 8 seeds on 2 cores); the numbers are those of one device up
    to rounding, which a long run can amplify late in learning."""
    devices = jax.local_devices()
    if len(devices) < 2 or keys.shape[axis] % len(devices):
        return keys
    mesh = jax.sharding.Mesh(np.asarray(devices), ("seeds",))
    spec = jax.sharding.PartitionSpec(*[None] * axis, "seeds")
    return jax.device_put(keys, jax.sharding.NamedSharding(mesh, spec))
