"""Fig. 2 of the letter: accuracy against modes and width, pattern geometry across layers.

    python -m experiments.fig2 [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

(a) test error over training; (b) accuracy against p; (c) least p against the width N, with
its ln N law; (d) pattern dispersion per layer; (e-f) subspace overlaps of seven-layer networks;
each against standard BP and the authors' (``bp_fanin``). Settings: experiments/configs/fig2.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mdl_jax
from mdl_jax import analysis
from experiments import common
from experiments.configs.fig2 import QUICK, Fig2Settings

LABELS = {"bp": "BP", "bp_fanin": "BP / sqrt(N) (authors')", "mdl": "MDL 1L2P", "mdl_1l1p": "MDL 1L1P"}


def run(settings: Fig2Settings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s, spread = time.perf_counter(), settings, common.spread
    def train(widths, method, modes=(None,), tag=""):
        grid = "-".join(map(str, widths)) + f"_{method}{tag}"
        return common.train_grid(out, grid, data, widths, method, modes=modes, **s.recipe(weight_decay=s.weight_decay_of(method)))
    count = lambda method, p=None: mdl_jax.param_count(mdl_jax.make_spec((784, 100, 100, 10), p, method))
    results: dict = {"settings": dataclasses.asdict(s)}
    if {*"ab"} & {*s.panels}:  # 784-100-100-10
        results.update(a_test_error={}, b_accuracy_vs_p={})
        for b in s.baselines:
            grid = train((784, 100, 100, 10), b)
            results["a_test_error"][b] = spread(1 - grid.test_accuracy.T)
            results["b_accuracy_vs_p"][b] = {**spread(grid.final(s.last_epochs)), "params": count(b)}
        for method in ("mdl", "mdl_1l1p"):
            grid = train((784, 100, 100, 10), method, sorted({*s.modes, *s.trajectory_modes}))
            final, errors = common.by_modes(grid, grid.final(s.last_epochs)), common.by_modes(grid, 1 - grid.test_accuracy.T)
            results["b_accuracy_vs_p"][method] = {str(p): {**spread(final[p]), "param_fraction": count(method, p) / count("bp")} for p in s.modes}
            if method == "mdl":
                results["a_test_error"].update({f"mdl_p{p}": spread(errors[p]) for p in s.trajectory_modes})
    if "c" in s.panels:  # 784-N-N-10; p > N adds nothing
        least, accuracy = {b: {} for b in s.baselines}, {}
        for n in s.widths:
            grid = train((784, n, n, 10), "mdl", [p for p in s.width_modes if p <= n], "_width_modes")
            by_p = common.by_modes(grid, grid.final(s.last_epochs))
            references = {b: train((784, n, n, 10), b).final(s.last_epochs) for b in s.baselines}
            accuracy[str(n)] = {**{str(p): a.mean() for p, a in by_p.items()}, **{b: r.mean() for b, r in references.items()}}
            for b, reference in references.items():
                least[b][str(n)] = analysis.least_modes(list(by_p), np.stack(list(by_p.values())), reference)
        results.update(least_modes=least, least_modes_fit={b: analysis.fit_least_modes(v) for b, v in least.items()}, c_accuracy_by_p=accuracy)
    if "d" in s.panels:  # 784-100-100-100-10
        grid = train((784, 100, 100, 100, 10), "mdl", [s.deep_modes])
        results["d_dispersion_by_layer"] = spread(np.stack([jax.vmap(analysis.pattern_dispersion)(xh) for xh in grid.params["xi_hat"]], 1))
    if {*"ef"} & {*s.panels}:  # seven layers of width 100
        x, y = jnp.asarray(data.test_images), jnp.asarray(data.test_labels)
        for method in ("mdl", *s.baselines):
            grid = train((784,) + (100,) * 5 + (10,), method, [s.deep_modes] if method == "mdl" else (None,))
            overlaps = jax.vmap(lambda p: analysis.layer_overlaps(p, grid.spec, x, y, 10, dim=s.overlap_dim))(grid.params)
            results.setdefault("overlap", {})[method] = spread(overlaps)
            results.setdefault("ef_accuracy", {})[method] = spread(grid.final(s.last_epochs))
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "fig2", results, settings, draw(results) if plot else None)
    return results


TITLES = {"a": ("(a) 784-100-100-10", "epoch", "test error"), "b": ("(b) accuracy against p", "modes p", "test accuracy (mean of last epochs)"),
          "c": ("(c) 784-N-N-10, against each baseline", "hidden width N", "least number of modes"),
          "d": ("(d) 784-100-100-100-10, p = 30", "layer l", "dispersion of the xi_hat^l"),
          "e": ("(e) MDL, 7 layers of width 100", "hidden layer", "subspace overlap"),
          "f": ("(f) baselines, 7 layers of width 100", "hidden layer", "subspace overlap")}


def draw(results: dict):
    """The panels the run trained (``settings["panels"]``), three to a row."""
    plt = common.pyplot()
    letters = sorted(set(results["settings"].get("panels", "abcdef")) | ({"a", "b"} if "a_test_error" in results else set())
                     | ({"e", "f"} if "overlap" in results else set()))
    rows, cols = (len(letters) + 2) // 3, min(len(letters), 3)
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), constrained_layout=True, squeeze=False)
    axes = dict(zip(letters, grid.flat))
    for ax in list(grid.flat)[len(letters):]:
        ax.set_axis_off()
    baselines = results["settings"]["baselines"]
    for name, curve in results.get("a_test_error", {}).items():
        common.band(axes["a"], np.arange(1, len(curve["mean"]) + 1), curve, label=LABELS.get(name, name.replace("mdl_p", "MDL p = ")))
    panel = results.get("b_accuracy_vs_p", {})
    for method in ("mdl", "mdl_1l1p") if panel else ():
        ps = sorted(panel[method], key=int)
        common.errorbar(axes["b"], [int(p) for p in ps], common.stacked(panel[method][p] for p in ps), label=LABELS[method])
    for b, style, marker in zip(baselines, ("--", ":"), "os"):
        if panel:
            axes["b"].axhline(panel[b]["mean"], color="k", ls=style, label=LABELS[b])
        if "least_modes" in results:
            _draw_least_modes(axes["c"], results["least_modes"][b], results["least_modes_fit"][b], LABELS[b], marker)
    if "d_dispersion_by_layer" in results:
        common.errorbar(axes["d"], np.arange(1, len(results["d_dispersion_by_layer"]["mean"]) + 1), results["d_dispersion_by_layer"])
    for letter, shown in (("e", ["mdl"]), ("f", baselines)) if "overlap" in results else ():
        for method in ("mdl", *baselines):
            kw = dict(yerr=None, marker=None, ls=":", color="gray") if method not in shown else {}
            common.errorbar(axes[letter], np.arange(1, len(results["overlap"][method]["mean"]) + 1), results["overlap"][method],
                            label=LABELS[method], **kw)
        axes[letter].set(ylim=(0, 1.02))
    common.label_axes(axes.values(), [TITLES[letter] for letter in axes])
    for letter, scale in (("a", dict(yscale="log")), ("c", dict(xscale="log"))):
        if letter in axes:
            axes[letter].set(**scale)
    return fig


def _draw_least_modes(ax, least: dict, fit: dict | None, label: str, marker: str) -> None:
    """Panel (c) for one baseline: the least p found at each width, with its ln N law and its
    saturating form (a + b ln N up to an onset, a constant beyond) where they were fitted."""
    found = sorted((int(n), p) for n, p in least.items() if p is not None)
    if not found:
        return
    line = ax.plot(*zip(*found), marker=marker, label=label)[0]
    for form, style in (("log", "--"), ("saturating", ":")):
        law = (fit or {}).get(form)
        if law:
            n = np.geomspace(found[0][0], found[-1][0], 100)
            ax.plot(n, analysis.least_modes_law(law, n), style, color=line.get_color(), label=f"{form}: {analysis.describe_law(law)}")


def main(argv=None) -> dict:
    return common.main(__doc__, run, Fig2Settings(), QUICK, "fig2", argv=argv)


if __name__ == "__main__":
    main()
