"""``mdl-jax plot WORKDIR``: a workdir's learning curves, drawn from its ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def curves(workdir: str | os.PathLike) -> dict[tuple, dict[str, np.ndarray]]:
    """Test accuracy and loss against epoch per (method, modes, learning rate), over seeds.

    Returns:
      ``{(method, modes, lr): {"epochs", "accuracy", "loss"}}``: ``epochs (E,)`` and per metric
      an array ``(seeds, E)`` (NaN where a run has no value, e.g. the loss of epoch 0).
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {workdir} the workdir of an mdl-jax train run?")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise FileNotFoundError(f"{path} is empty: the run has not finished an epoch yet")
    groups: dict[tuple, dict[int, dict[int, dict]]] = {}  # group -> run -> epoch -> line
    for line in lines:
        group = (line["method"], tuple(line["modes"]), line["learning_rate"])
        groups.setdefault(group, {}).setdefault(line["run"], {})[line["epoch"]] = line
    found = {}
    for group, runs in groups.items():
        epochs = np.arange(1 + max(max(r) for r in runs.values()))
        metric = lambda field: np.asarray([[_value(r.get(e), field) for e in epochs] for r in runs.values()])
        found[group] = {"epochs": epochs, "accuracy": metric("test_accuracy"), "loss": metric("test_loss")}
    return found


def _value(line: dict | None, field: str) -> float:
    value = None if line is None else line.get(field)
    return np.nan if value is None else float(value)


def plot_workdir(workdir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draws test accuracy and test loss against epoch (mean over seeds, band of one standard
    deviation) per method, modes and learning rate, and saves it as ``WORKDIR/metrics.png``
    (or ``out``). Returns the image's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = curves(workdir)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for (method, modes, lr), values in found.items():
        label = f"{method}" + (f" p={','.join(map(str, modes))}" if modes else "") + (f" lr={lr:g}" if len(found) > 1 else "")
        for ax, field, scale in ((axes[0], "accuracy", 100.0), (axes[1], "loss", 1.0)):
            runs = values[field] * scale
            shown = ~np.all(np.isnan(runs), 0)
            if not shown.any():
                continue
            x, mean, std = values["epochs"][shown], np.nanmean(runs[:, shown], 0), np.nanstd(runs[:, shown], 0)
            line = ax.plot(x, mean, marker="o", ms=3, label=f"{label} ({len(runs)} seeds)")[0]
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (mean ± std over seeds)")
    axes[1].set(xlabel="epoch", ylabel="test loss", yscale="log", title="test loss (mean ± std over seeds)")
    axes[0].legend(fontsize=7)
    path = Path(out) if out is not None else Path(workdir) / "metrics.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
