"""MDL side by side with DLRT on DLRT's MNIST benchmarks: LeNet-5 and a 784-500x4-10 MLP.

    python -m experiments.vs_dlrt [--quick] [--out DIR] [--data-dir DIR] [--set KEY=VALUE] [--resume]

Per benchmark: the dense model, MDL at fixed mode counts (for LeNet-5 the ranks DLRT reports,
so both count the same parameters) and adaptive MDL (tau pruning during training from DLRT's
starting ranks), each a sweep over seeds in one program; test accuracy (at the epoch of lowest
validation loss, as DLRT's tables, and at the last epoch) against evaluation compression, with
DLRT's stored numbers beside. Settings, protocol and goal: experiments/configs/vs_dlrt.py.
Writes DIR/vs_dlrt.png, .pdf, config.json, results.json, and each sweep as a workdir under
DIR/runs/.

Parameters are counted as DLRT counts them (weights only, no biases) and two ways for a
low-rank layer ``l`` with ``r`` modes (ranks) between ``n_in`` and ``n_out`` units:
``honest``, what the factors hold, ``(n_in + n_out + 1) r`` for MDL (``xi_hat``, ``sigma``,
``xi``) and ``(n_in + n_out) r`` for DLRT (``K``, ``L``); and ``dlrt``, the count behind DLRT's
stored table, ``(n_out + 1) r``, which reproduces its parameter column exactly (30,278 at ranks
10, 20, 48) and leaves out the input-side factor.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import mdl_jax
from experiments import common, models
from experiments.configs.vs_dlrt import DLRT_LENET, QUICK, VsDlrtSettings

#: (fan-in, fan-out) of each mode layer, and the weights of the layers that stay dense.
LENET_LAYERS, LENET_HEAD = ((25, 20), (500, 50), (800, 500)), 500 * 10
MLP_WIDTHS = (784, 500, 500, 500, 500, 10)
MLP_LAYERS, MLP_HEAD = tuple(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])), 0


def counts(layers, head: int, modes) -> dict[str, int]:
    """Weights of the dense model, and of a low-rank one with ``modes`` per layer (see the
    module docstring): ``{"dense", "honest", "dlrt"}``."""
    dense = sum(a * b for a, b in layers) + head
    if modes is None:
        return {"dense": dense, "honest": dense, "dlrt": dense}
    return {"dense": dense, "honest": sum((a + b + 1) * p for (a, b), p in zip(layers, modes)) + head,
            "dlrt": sum((b + 1) * p for (_, b), p in zip(layers, modes)) + head}


def _sweep(s: VsDlrtSettings, data, out: Path, name: str, widths, method: str, part: str, *, adam_lr=None, **extra) -> Path:
    optimizer = "adamw" if part == "mlp" or adam_lr else "sgd"
    lr = adam_lr or getattr(s, f"{part}_lr")
    common.train_grid(out, name, data, widths, method, seeds=range(s.seeds), lr=lr,
                      epochs=getattr(s, f"{part}_epochs"), batch_size=getattr(s, f"{part}_batch"), optimizer=optimizer,
                      weight_decay=0.0, lr_halving_epochs=10_000, validation=s.validation,
                      imports=["experiments.models"], **extra)
    return out / "runs" / name


def _runs(workdir: Path, method: str, first_epoch: int = 1) -> list[dict]:
    """Each run of a sweep: its modes, final modes, test accuracy at its lowest validation loss
    (among epochs ``first_epoch`` ..) and at the last epoch, and the trainable modes per epoch."""
    summary = json.loads((workdir / "summary.json").read_text())["runs"]
    val, test = (mdl_jax.load_metrics(workdir, method, f) for f in ("val_loss", "test_accuracy"))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    active = {(l["run"], l["epoch"]): l["active_modes"] for l in lines if "active_modes" in l}
    runs = []
    for r, info in enumerate(summary):
        epochs = np.arange(first_epoch, val.shape[0])
        best = int(epochs[np.argmin(val[epochs, r])])
        history = [active.get((r, e), info["modes"]) for e in range(1, val.shape[0])]
        runs.append({"modes": info["modes"], "prune_tau": info.get("prune_tau"), "seed": info["seed"],
                     "final_modes": info.get("final_modes", info["modes"]), "selected_epoch": best,
                     "selected_modes": active.get((r, best), info["modes"]),
                     "test_at_best_val": float(test[best, r]), "test_final": float(test[-1, r]),
                     "modes_by_epoch": history, "wall_time_s": info["wall_time_s"], "runs_in_program": info["runs_in_program"]})
    return runs


def _group(runs: list[dict], layers, head: int, epochs: int) -> dict:
    """Mean and spread over the seeds of one configuration, with its parameter counts."""
    moded = bool(runs[0]["modes"])  # the dense model's runs have no modes
    selected = np.asarray([r["selected_modes"] for r in runs]) if moded else None
    per_run = [counts(layers, head, r["selected_modes"] if moded else None) for r in runs]
    trained = [np.mean([counts(layers, head, m if moded else None)["honest"] for m in r["modes_by_epoch"]]) for r in runs]
    dense = per_run[0]["dense"]
    mean = lambda key: float(np.mean([c[key] for c in per_run]))
    return {
        "seeds": len(runs), "test_at_best_val": common.spread(100 * np.asarray([r["test_at_best_val"] for r in runs])),
        "test_final": common.spread(100 * np.asarray([r["test_final"] for r in runs])),
        "selected_modes_mean": None if selected is None else selected.mean(0), "selected_modes": None if selected is None else selected,
        "params_honest": mean("honest"), "params_dlrt_count": mean("dlrt"),
        "compression_honest": 100 * (1 - mean("honest") / dense), "compression_dlrt_count": 100 * (1 - mean("dlrt") / dense),
        "training_compression": 100 * (1 - float(np.mean(trained)) / dense),
        "wall_per_run_epoch_s": runs[0]["wall_time_s"] / runs[0]["runs_in_program"] / epochs,
    }


def _part(s: VsDlrtSettings, data, out: Path, part: str) -> dict:
    lenet = part == "lenet"
    widths, layers, head = (models.LENET_WIDTHS, LENET_LAYERS, LENET_HEAD) if lenet else (MLP_WIDTHS, MLP_LAYERS, MLP_HEAD)
    methods = ("lenet_plain", "lenet_modes") if lenet else ("bp", "mdl")
    fixed = [tuple(r) for r in s.lenet_ranks] if lenet else [(p,) * len(layers) for p in s.mlp_modes]
    p_max = tuple(s.lenet_p_max) if lenet else (s.mlp_p_max,) * len(layers)
    until, taus, epochs = getattr(s, f"{part}_prune_until"), getattr(s, f"{part}_prune_taus"), getattr(s, f"{part}_epochs")
    groups, walls = {}, {}
    dense = _sweep(s, data, out, f"{part}_dense", widths, methods[0], part)
    groups["dense"] = _group(_runs(dense, methods[0]), layers, head, epochs)
    if not lenet or s.lenet_mdl_sgd:  # MDL under the benchmark's own optimizer
        moded = _sweep(s, data, out, f"{part}_fixed", widths, methods[1], part, modes=[list(p) for p in fixed],
                       adam_lr=None if lenet else s.mlp_mdl_lr)
        runs = _runs(moded, methods[1])
        for p in fixed:
            groups["p=" + ",".join(map(str, p))] = _group([r for r in runs if tuple(r["modes"]) == p], layers, head, epochs)
    if lenet and s.lenet_mdl_adam_lr:  # the same sweep under MDL's own optimizer (the letter's Adam)
        moded = _sweep(s, data, out, f"{part}_fixed_adam", widths, methods[1], part, modes=[list(p) for p in fixed],
                       adam_lr=s.lenet_mdl_adam_lr)
        runs = _runs(moded, methods[1])
        for p in fixed:
            groups["p=" + ",".join(map(str, p)) + " adam"] = _group([r for r in runs if tuple(r["modes"]) == p], layers,
                                                                    head, epochs)
    if taus:
        adaptive = _sweep(s, data, out, f"{part}_adaptive", widths, methods[1], part, modes=[list(p_max)], prune_every=1,
                          prune_tau=list(taus), prune_until=until, adam_lr=s.lenet_mdl_adam_lr if lenet else s.mlp_mdl_lr)
        runs = _runs(adaptive, methods[1], first_epoch=until)  # selection at the final masks
        for tau in taus:
            groups[f"tau={tau:g}"] = _group([r for r in runs if r["prune_tau"] == tau], layers, head, epochs)
    for name, group in groups.items():
        walls[name] = group["wall_per_run_epoch_s"]
    return {"groups": groups, "wall_per_run_epoch_s": walls, "p_max": p_max}


def verdict(results: dict) -> dict:
    """Per DLRT tolerance: the MDL configuration at DLRT's ranks against DLRT's stored mean, and
    its wall time per run and epoch against the dense model's (the goal of the config)."""
    lenet = results.get("lenet")
    if lenet is None:
        return {}
    out, dense_wall = {}, lenet["groups"]["dense"]["wall_per_run_epoch_s"]
    for tol, (mean, std, ranks, _, cr, _) in DLRT_LENET.items():
        if ranks is None:
            continue
        for recipe, suffix in (("sgd", ""), ("adam", " adam")):
            ours = lenet["groups"].get("p=" + ",".join(map(str, ranks)) + suffix)
            if ours is None:
                continue
            m, sd = float(ours["test_at_best_val"]["mean"]), float(ours["test_at_best_val"]["std"])
            faster = ours["wall_per_run_epoch_s"] < dense_wall
            out[f"{tol} {recipe}"] = {
                "dlrt": [mean, std], "mdl": [m, sd], "compression_dlrt_count": cr, "optimizer": recipe,
                "accuracy_met": bool(m >= mean), "faster_than_dense": bool(faster),
                "text": f"tolerance {tol} (ranks {ranks}, {cr} % as DLRT counts), MDL with {recipe}: {m:.2f} ± {sd:.2f} % "
                        f"against DLRT {mean:.2f} ± {std:.2f} % ({'met' if m >= mean else 'not met'}); "
                        f"{ours['wall_per_run_epoch_s']:.1f} s per run and epoch against dense {dense_wall:.1f} s"}
    return out


def run(settings: VsDlrtSettings, data: mdl_jax.Dataset, out: Path, *, plot: bool = True) -> dict:
    start, s = time.perf_counter(), settings
    models.register()
    data = data._replace(train_images=data.train_images[: s.n_train], train_labels=data.train_labels[: s.n_train],
                         test_images=data.test_images[: s.n_test], test_labels=data.test_labels[: s.n_test])
    results = {"settings": dataclasses.asdict(s), "dlrt_lenet": {k: list(v) for k, v in DLRT_LENET.items()}}
    for part in s.parts:
        results[part] = _part(s, data, out, part)
    results["verdict"] = verdict(results)
    results["wall_time_s"] = time.perf_counter() - start
    common.save(out, "vs_dlrt", results, settings, draw(results) if plot else None)
    return results


def draw(results: dict):
    """Accuracy against evaluation compression (honest count, DLRT's count for DLRT's points),
    one panel per benchmark, and the wall time per run and epoch."""
    plt = common.pyplot()
    parts = [p for p in ("lenet", "mlp") if p in results]
    fig, axes = plt.subplots(1, len(parts) + 1, figsize=(5.5 * (len(parts) + 1), 4.2), constrained_layout=True)
    titles = {"lenet": "LeNet-5, batch 128 (dense: SGD 0.05)", "mlp": "784-500x4-10, batch 256 (Adam)"}
    for ax, part in zip(axes, parts):
        groups = results[part]["groups"]
        for name, g in groups.items():
            marker = "s" if name == "dense" else ("^" if name.startswith("tau") else ("D" if name.endswith("adam") else "o"))
            ax.errorbar([g["compression_honest"]], [g["test_at_best_val"]["mean"]], yerr=[g["test_at_best_val"]["std"]],
                        fmt=marker, capsize=2, label=f"MDL {name}" if name != "dense" else "dense (ours)")
        if part == "lenet":
            dlrt = [v for v in results["dlrt_lenet"].values() if v[2] is not None]
            honest = [100 * (1 - counts(LENET_LAYERS, LENET_HEAD, v[2])["honest"] / 430_500) for v in dlrt]
            ax.errorbar([v[4] for v in dlrt], [v[0] for v in dlrt], yerr=[v[1] for v in dlrt], fmt="kx", capsize=2,
                        label="DLRT, as it counts")
            ax.errorbar(honest, [v[0] for v in dlrt], yerr=[v[1] for v in dlrt], fmt="k+", capsize=2, alpha=0.6,
                        label="DLRT, factors counted")
            ax.axhline(results["dlrt_lenet"]["dense"][0], color="k", ls=":", lw=0.8, label="DLRT's dense")
        ax.set(title=titles[part], xlabel="evaluation compression (%)", ylabel="test accuracy (%), best validation epoch")
        ax.legend(fontsize=6)
    ax = axes[-1]
    for i, part in enumerate(parts):
        walls = results[part]["wall_per_run_epoch_s"]
        ax.bar(np.arange(len(walls)) + 0.4 * i, list(walls.values()), width=0.4, label=part)
        for j, name in enumerate(walls):
            ax.annotate(name, (j + 0.4 * i, 0), rotation=90, fontsize=6, va="bottom", ha="center")
    ax.set(title="wall time per run and epoch (one program per sweep)", ylabel="s", xticks=[])
    ax.legend(fontsize=7)
    return fig


def main(argv=None) -> dict:
    results = common.main(__doc__, run, VsDlrtSettings(), QUICK, "vs_dlrt", argv=argv)
    for part in ("lenet", "mlp"):
        for name, g in results.get(part, {}).get("groups", {}).items():
            print(f"{part} {name}: {g['test_at_best_val']['mean']:.2f} ± {g['test_at_best_val']['std']:.2f} % "
                  f"(final epoch {g['test_final']['mean']:.2f} ± {g['test_final']['std']:.2f}), compression "
                  f"{g['compression_honest']:.1f} % ({g['compression_dlrt_count']:.1f} % as DLRT counts), "
                  f"{g['wall_per_run_epoch_s']:.1f} s per run and epoch")
    for v in results["verdict"].values():
        print(v["text"])
    return results


if __name__ == "__main__":
    main()
