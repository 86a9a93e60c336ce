"""Analyses of trained mode networks behind the letter's Figs. 1-3 (``mdl-method-notes.md`` section 4).

Everything that touches a network is a pure JAX function (vmappable over runs, masks or draws);
the curve fits at the end are small least-squares problems on host arrays.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdl_jax._methods import full_mask, with_layer_mask
from mdl_jax._models import ModeLayer, Params, apply, mode_importance, mode_importance_parts, mode_layers
from mdl_jax._spec import NetworkSpec
from mdl_jax._train import per_example_loss


def removal_mask(scores: jax.Array, fraction: jax.Array) -> jax.Array:
    """0/1 mask keeping all but the ``floor(fraction * p)`` modes of lowest ``scores``."""
    p = scores.shape[0]
    position = jnp.argsort(jnp.argsort(scores))  # 0 for the weakest mode
    return (position >= jnp.floor(fraction * p)).astype(scores.dtype)


def accuracy(params: Params, images, labels, *, spec: NetworkSpec, mode_mask=None, loss: str = "cross_entropy"):
    """Test accuracy of one network (optionally with modes switched off)."""
    logits = apply(params, images, spec=spec, mode_mask=mode_mask)
    return per_example_loss(logits, labels, loss)[1].mean()


class RemovalCurves(NamedTuple):
    fractions: jax.Array  # (F,)
    weakest_first: jax.Array  # (F,) accuracy removing the lowest-tau modes first
    random: jax.Array  # (F, draws) accuracy removing uniformly random modes
    smallest_sigma_first: jax.Array  # (F,) accuracy removing the lowest-|sigma| modes first


def removal_curves(
    params: Params, spec: NetworkSpec, images, labels, *, layer: int, fractions: jax.Array,
    key: jax.Array, draws: int = 10, loss: str = "cross_entropy", mode_mask=None,
) -> RemovalCurves:
    """Accuracy as a growing fraction of one layer's modes is switched off (Fig. 3a).

    The modes of ``layer`` are removed (sigma zeroed) weakest-tau first (the letter's text),
    smallest-``|sigma|`` first (the authors' notebook), and in uniformly random order
    (``draws`` independent orders); every (fraction, order) pair is one vmapped
    evaluation of the whole test set. ``mode_mask`` is the run's own mask (default: every
    mode active).
    """
    mask = full_mask(spec) if mode_mask is None else tuple(mode_mask)
    modes = mode_layers(params, spec)[layer]
    tau = mode_importance(modes, mask[layer])

    def evaluate(layer_mask):
        masks = with_layer_mask(mask, layer, layer_mask * mask[layer])
        return accuracy(params, images, labels, spec=spec, mode_mask=masks, loss=loss)

    ranked = lambda scores: jax.vmap(lambda f: evaluate(removal_mask(scores, f)))(fractions)
    random_scores = jax.random.uniform(key, (draws, tau.shape[0]), tau.dtype)
    per_draw = jax.vmap(ranked, out_axes=1)(random_scores)
    # Absent modes rank below every present one, as their tau (zero) does.
    sigma = jnp.where(mask[layer] > 0, jnp.abs(modes.sigma), -1.0)
    return RemovalCurves(fractions, ranked(tau), per_draw, ranked(sigma))


class RemovalStudy(NamedTuple):
    """Fig. 3 for a stack of runs (leading axis R): removal curves and the tau spectrum of one layer."""

    weakest_first: jax.Array  # (R, F) accuracy removing the lowest-tau modes first
    random: jax.Array  # (R, F, draws) accuracy removing modes in random order
    smallest_sigma_first: jax.Array  # (R, F) accuracy removing the lowest-|sigma| modes first
    tau: jax.Array  # (R, p) tau sorted in descending order
    parts: jax.Array  # (R, 3, p) tau's three terms, in the same order
    rank: jax.Array  # (R, p) rank of each mode, 0 for the largest tau


def removal_study(
    params: Params, spec: NetworkSpec, images, labels, *, layer: int, fractions: jax.Array, keys: jax.Array,
    draws: int = 10, mode_mask=None, loss: str = "cross_entropy",
) -> RemovalStudy:
    """:func:`removal_curves` and the ranked tau of ``layer`` for every run of a stack.

    One compiled program for all runs: a ``lax.map`` over the run axis (each run's removal
    curves are already a vmap over fractions and orders of the whole test set, so a vmap over
    runs too would hold R x F x draws copies of the activations). ``keys``: one per run, for
    its random orders; ``mode_mask``: per layer ``(R, p)`` (default: every mode active).
    """
    runs = keys.shape[0]
    masks = tuple(jnp.broadcast_to(m, (runs,) + m.shape) for m in full_mask(spec)) if mode_mask is None else tuple(mode_mask)

    def one(run):
        run_params, key, mask = run
        curves = removal_curves(run_params, spec, images, labels, layer=layer, fractions=fractions, key=key,
                                draws=draws, loss=loss, mode_mask=mask)
        terms = mode_importance_parts(mode_layers(run_params, spec)[layer], mask[layer])
        order = jnp.argsort(-terms.sum(0))
        return RemovalStudy(curves.weakest_first, curves.random, curves.smallest_sigma_first, terms.sum(0)[order],
                            terms[:, order], jnp.argsort(order))

    return jax.lax.map(one, (params, keys, masks))


def accuracy_leading_and_tail(
    params: Params, spec: NetworkSpec, images, labels, *, layer: int, rank: jax.Array, leading: int,
    loss: str = "cross_entropy",
) -> jax.Array:
    """Test accuracy of every run keeping only its ``leading`` highest-tau modes of ``layer``,
    and keeping only the others: ``(R, 2)``. ``rank`` is :attr:`RemovalStudy.rank`."""

    def one(run):
        run_params, run_rank = run
        top = (run_rank < leading).astype(jax.tree.leaves(run_params)[0].dtype)
        keep = lambda m: with_layer_mask(full_mask(spec), layer, m)
        return jnp.stack([accuracy(run_params, images, labels, spec=spec, mode_mask=keep(top), loss=loss),
                          accuracy(run_params, images, labels, spec=spec, mode_mask=keep(1 - top), loss=loss)])

    return jax.lax.map(one, (params, rank))


class ModeStudy(NamedTuple):
    """One layer's modes summarised over a stack of runs (host arrays, ready for results.json)."""

    removal: dict  # weakest_first / smallest_sigma_first / random: {mean, std} over runs (F,); the gap at half
    spectrum: dict  # tau and its parts by rank (mean over runs), both fits, accuracy of leading / tail modes


def mode_study(
    params: Params, spec: NetworkSpec, images, labels, *, layer: int, fractions: jax.Array, keys: jax.Array,
    draws: int = 10, split: int = 10,
) -> ModeStudy:
    """What the letter's Fig. 3 reports about ``layer``, for every run of a stack at once.

    :func:`removal_study`, then over runs: the removal curves' mean and spread, the gap between
    weakest-first and random removal at half the modes removed; the mean tau spectrum with the
    fitted break (:func:`fit_two_power_laws`) and the authors' fixed split at rank ``split``
    (:func:`fit_fixed_split`); the accuracy keeping only the modes before the fitted break,
    and only those after it.
    """
    study = jax.tree.map(np.asarray, removal_study(params, spec, images, labels, layer=layer, fractions=fractions,
                                                   keys=keys, draws=draws))
    spread = lambda a: {"mean": a.mean(0), "std": a.std(0)}
    random = study.random.mean(-1)
    half = int(np.argmin(np.abs(np.asarray(fractions) - 0.5)))
    removal = {"weakest_first": spread(study.weakest_first), "smallest_sigma_first": spread(study.smallest_sigma_first),
               "random": spread(random),
               "gap_at_half_removed_points": 100 * float(study.weakest_first[:, half].mean() - random[:, half].mean()),
               "accuracy_at_half_removed_weakest_first": float(study.weakest_first[:, half].mean())}
    tau = study.tau.mean(0)
    spectrum = {"tau_by_rank": tau, "parts_by_rank": study.parts.mean(0), "fit": None, "fixed_split": None}
    if len(tau) >= 6:
        fit = fit_two_power_laws(tau)
        kept = np.asarray(accuracy_leading_and_tail(params, spec, images, labels, layer=layer, rank=study.rank,
                                                    leading=fit.break_rank - 1))
        spectrum.update(fit=fit._asdict(), accuracy_leading_only=kept[:, 0].mean(), accuracy_tail_only=kept[:, 1].mean())
    if len(tau) > split + 1:
        spectrum["fixed_split"] = fit_fixed_split(tau, split=split)._asdict()
    return ModeStudy(removal, spectrum)


def pattern_dispersion(patterns: jax.Array) -> jax.Array:
    """Mean Euclidean distance of the pattern vectors (columns, one per mode) from their centroid."""
    centroid = jnp.mean(patterns, axis=1, keepdims=True)
    return jnp.mean(jnp.linalg.norm(patterns - centroid, axis=0))


def class_subspaces(responses: jax.Array, labels: jax.Array, num_classes: int, dim: int) -> jax.Array:
    """Leading ``dim`` eigenvectors of each class's response covariance: ``(classes, N, dim)``."""

    def basis(c):
        weight = (labels == c).astype(responses.dtype)
        count = jnp.sum(weight)
        mean = weight @ responses / count
        centred = (responses - mean) * weight[:, None]
        _, vectors = jnp.linalg.eigh(centred.T @ centred / count)
        return vectors[:, ::-1][:, :dim]

    return jax.vmap(basis)(jnp.arange(num_classes))


def subspace_overlap(responses: jax.Array, labels: jax.Array, num_classes: int, *, dim: int = 5) -> jax.Array:
    """Mean over class pairs of the cosine of the smallest principal angle between the classes'
    principal subspaces (Bjorck & Golub 1973): the largest singular value of ``U_a^T U_b``."""
    bases = class_subspaces(responses, labels, num_classes, dim)
    pairs = jnp.asarray(list(itertools.combinations(range(num_classes), 2)))
    cosines = jax.vmap(lambda ab: jnp.linalg.svd(bases[ab[0]].T @ bases[ab[1]], compute_uv=False)[0])(pairs)
    return jnp.mean(cosines)


def layer_overlaps(params: Params, spec: NetworkSpec, images, labels, num_classes: int, *, dim: int = 5) -> jax.Array:
    """:func:`subspace_overlap` of every hidden layer's responses, ``(L - 1,)``."""
    _, hidden = apply(params, images, spec=spec, return_hidden=True)
    return jnp.stack([subspace_overlap(h, labels, num_classes, dim=dim) for h in hidden])


def mean_abs_cosine(a: jax.Array, b: jax.Array, *, exclude_diagonal: bool = False) -> jax.Array:
    """Mean ``|cos|`` between the columns of ``a`` and those of ``b`` (same ambient space)."""
    unit = lambda m: m / jnp.linalg.norm(m, axis=0, keepdims=True)
    cosines = jnp.abs(unit(a).T @ unit(b))
    if exclude_diagonal:
        n = cosines.shape[0]
        return (jnp.sum(cosines) - jnp.trace(cosines)) / (n * n - n)
    return jnp.mean(cosines)


class Orthogonality(NamedTuple):
    intra: list[float]  # per hidden layer l: xi of weight layer l-1 against xi_hat of weight layer l
    inter: list[float]  # per weight layer l with N_l = N_{l+1}: its xi_hat against its xi


def pattern_orthogonality(params: Params, spec: NetworkSpec) -> Orthogonality:
    """Mean ``|cos|`` of intra-layer pattern pairs (the two pattern sets living in one hidden
    layer) and of inter-layer pairs (the upstream and downstream patterns of one weight matrix,
    e.g. ``xi_hat^l`` vs ``xi^{l+1}`` in the letter's notation)."""
    layers = mode_layers(params, spec)
    intra = [float(mean_abs_cosine(layers[l - 1].xi, layers[l].xi_hat)) for l in range(1, len(layers))]
    inter = [
        float(mean_abs_cosine(f.xi_hat, f.xi))
        for f in layers if f.xi_hat.shape[0] == f.xi.shape[0]
    ]
    return Orthogonality(intra, inter)


def geometric_maps(layer: ModeLayer, x: jax.Array) -> dict[str, jax.Array]:
    """The successive maps of Fig. 1(c): ``xi_hat^T x``, ``Sigma xi_hat^T x``,
    ``xi Sigma xi_hat^T x`` and the hidden representation ``relu(xi Sigma xi_hat^T x)``."""
    projected = x @ layer.xi_hat
    scaled = projected * layer.sigma
    remapped = scaled @ layer.xi.T
    return {"projected": projected, "scaled": scaled, "remapped": remapped, "hidden": jax.nn.relu(remapped)}


# ---------------------------------------------------------------- fits on host arrays


def _log_spectrum(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(ln rank, ln value)`` of ``values`` sorted in descending order (rank 1 the largest)."""
    y = np.log(np.sort(np.asarray(values, float))[::-1])
    return np.log(np.arange(1, len(y) + 1)), y


class TwoPowerLaws(NamedTuple):
    break_rank: int  # first rank of the second segment
    leading_exponent: float  # tau ~ rank^(-leading_exponent) before the break
    tail_exponent: float  # and rank^(-tail_exponent) after it
    residual: float  # sum of squared log residuals


def fit_two_power_laws(values: Sequence[float], *, min_points: int = 3) -> TwoPowerLaws:
    """Two power laws in rank, with the break rank chosen by least squares in log-log.

    ``values`` are sorted in descending order; each segment gets its own line in
    ``(ln rank, ln value)``; the break minimises the total squared residual.
    """
    x, y = _log_spectrum(values)
    if len(y) < 2 * min_points:
        raise ValueError(f"need at least {2 * min_points} values for two segments, got {len(y)}")

    def line(xs, ys):
        slope, intercept = np.polyfit(xs, ys, 1)
        return slope, float(np.sum((ys - (slope * xs + intercept)) ** 2))

    best = None
    for b in range(min_points, len(y) - min_points + 1):
        (s1, r1), (s2, r2) = line(x[:b], y[:b]), line(x[b:], y[b:])
        if best is None or r1 + r2 < best.residual:
            best = TwoPowerLaws(b + 1, -s1, -s2, r1 + r2)
    return best


class FixedSplit(NamedTuple):
    split: int  # last rank of the head
    head_slope: float  # slope of ln tau against ln rank over ranks 1 .. split
    tail_slope: float  # and over ranks split + 1 .. p


def fit_fixed_split(values: Sequence[float], *, split: int = 10) -> FixedSplit:
    """Two lines in log-log over ranks ``1..split`` and ``split+1..p``, fitted separately: the
    authors' procedure for Fig. 3b (they report a tail slope of about -0.82 at ``split=10``).
    Unlike :func:`fit_two_power_laws` the break is imposed, not estimated."""
    x, y = _log_spectrum(values)
    if not 2 <= split <= len(y) - 2:
        raise ValueError(f"split={split} leaves fewer than two ranks on a side of {len(y)} values")
    head, tail = np.polyfit(x[:split], y[:split], 1)[0], np.polyfit(x[split:], y[split:], 1)[0]
    return FixedSplit(split, float(head), float(tail))


def least_modes(modes: Sequence[int], accuracies: np.ndarray, reference: np.ndarray) -> int | None:
    """Least p whose mean accuracy over seeds is within the seed-to-seed error of ``reference``.

    Criterion: ``mean(acc_p) >= mean(reference) - std(reference)`` (sample standard deviation
    of the reference runs, e.g. BP). ``accuracies`` is ``(len(modes), seeds)``.
    """
    reference = np.asarray(reference, float)
    spread = reference.std(ddof=1) if reference.size > 1 else 0.0
    threshold = reference.mean() - spread
    for p, acc in sorted(zip(modes, np.asarray(accuracies, float)), key=lambda t: t[0]):
        if acc.mean() >= threshold:
            return int(p)
    return None


class LogFit(NamedTuple):
    slope: float  # least p ~ slope * ln N + intercept
    intercept: float
    r2: float
    rss: float  # residual sum of squares


def fit_log_growth(widths: Sequence[int], values: Sequence[float]) -> LogFit:
    """Least-squares fit of ``values ~ slope * ln(width) + intercept``, its R^2 and residual sum of squares."""
    x, y = np.log(np.asarray(widths, float)), np.asarray(values, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - slope * x - intercept) ** 2))
    total = np.sum((y - y.mean()) ** 2)
    return LogFit(float(slope), float(intercept), float(1 - residual / total) if total > 0 else 1.0, residual)


class SaturatingFit(NamedTuple):
    slope: float  # least p ~ slope * ln N + intercept for N < onset,
    intercept: float
    plateau: float  # ... and ~ plateau for N >= onset
    onset: int  # the first width of the flat part
    rss: float  # residual sum of squares


def fit_saturating(widths: Sequence[int], values: Sequence[float]) -> SaturatingFit:
    """Least-squares fit of ``a + b ln N`` up to an onset width and a constant from it on.

    The onset is chosen among the widths (at least two before it, one from it on) by the least
    total residual sum of squares; ``a, b`` fit the widths before it, the constant is the mean
    of the rest. Needs three widths or more.
    """
    order = np.argsort(np.asarray(widths, float))
    n, y = np.asarray(widths, float)[order], np.asarray(values, float)[order]
    if len(n) < 3:
        raise ValueError(f"a saturating fit needs three widths or more, got {len(n)}")
    best = None
    for k in range(2, len(n)):
        slope, intercept = np.polyfit(np.log(n[:k]), y[:k], 1)
        plateau = y[k:].mean()
        rss = float(np.sum((y[:k] - slope * np.log(n[:k]) - intercept) ** 2) + np.sum((y[k:] - plateau) ** 2))
        if best is None or rss < best.rss - 1e-12:
            best = SaturatingFit(float(slope), float(intercept), float(plateau), int(n[k]), rss)
    return best


def least_modes_law(law: dict, widths) -> np.ndarray:
    """The least p that a fitted law (a :class:`LogFit` or :class:`SaturatingFit` as a dict,
    as :func:`fit_least_modes` stores it) gives at ``widths``."""
    n = np.asarray(widths, float)
    grows = law["slope"] * np.log(n) + law["intercept"]
    return np.where(n >= law["onset"], law["plateau"], grows) if "onset" in law else grows


def describe_law(law: dict) -> str:
    """One line for a fitted law, e.g. ``3.3 ln N - 1.1, constant 20 from N = 800 (RSS 4.0)``."""
    text = f"{law['slope']:.1f} ln N {'+-'[law['intercept'] < 0]} {abs(law['intercept']):.1f}"
    if "onset" in law:
        text += f", constant {law['plateau']:.1f} from N = {law['onset']}"
    return text + f" (RSS {law['rss']:.1f})"


def fit_least_modes(least: dict) -> dict | None:
    """Both laws of the least number of modes against width (Fig. 2c), from ``{N: least p or None}``.

    Returns ``None`` with fewer than two widths where a least p was found, else a dict:
    ``log`` (:class:`LogFit` over every width), ``saturating`` (:class:`SaturatingFit`; ``None``
    with fewer than three widths), ``held_out`` (each law fitted without the widest width and
    its error there, ``None`` with fewer than four widths) and ``preferred``: the law with the
    smaller error at the held-out widest width, by more than half a mode (else the log law,
    having fewer parameters), or with the smaller residual sum of squares where no width can be
    held out.
    """
    points = sorted((int(n), int(p)) for n, p in least.items() if p is not None)
    if len(points) < 2:
        return None
    widths, values = zip(*points)
    laws = {"log": fit_log_growth(widths, values)._asdict(),
            "saturating": fit_saturating(widths, values)._asdict() if len(points) >= 3 else None}
    held_out = None
    if len(points) >= 4:
        train = (widths[:-1], values[:-1])
        fitted = {"log": fit_log_growth(*train)._asdict(), "saturating": fit_saturating(*train)._asdict()}
        held_out = {"width": widths[-1], "least_modes": values[-1],
                    **{form: {"predicted": float(least_modes_law(law, widths[-1])), "error": float(least_modes_law(law, widths[-1]) - values[-1])}
                       for form, law in fitted.items()}}
        preferred = "saturating" if abs(held_out["saturating"]["error"]) < abs(held_out["log"]["error"]) - 0.5 else "log"
    else:
        preferred = "saturating" if laws["saturating"] and laws["saturating"]["rss"] < laws["log"]["rss"] - 0.5 else "log"
    return {**laws, "held_out": held_out, "preferred": preferred}
