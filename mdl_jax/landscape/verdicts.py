"""Fitting and examining each part of the weight samples (moment checks against Metropolis
chains, warnings for fits worse than no couplings), and the shallow-network verdicts."""

from __future__ import annotations

import time
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax.landscape.learning import boltzmann_learning, boltzmann_learning_mcmc
from mdl_jax.landscape.mcmc import metropolis, reversed_state_fraction
from mdl_jax.landscape.models import connected_moments, Ising, moment_errors
from mdl_jax.landscape.sweep import distance_after_jump, distance_jumps, entropy_landscape, field_sweep, hysteresis, metropolis_landscape


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
