"""Runs a configured sweep into a workdir: config, metrics, checkpoints, parameters, summary.

A workdir holds::

    config.json          the resolved configuration
    metrics.jsonl        one line per run per epoch (epoch 0: the untrained network)
    checkpoints/M.npz    state of method M's sweep after its last checkpointed epoch
    params/M.npz         final parameters of method M, stacked along the run axis
    summary.json         per run: method, modes, seed, lr, final test accuracy, size, time
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from mdl_jax._config import ConfigError, TrainConfig, make_config
from mdl_jax._data import load_dataset
from mdl_jax._train import EpochMetrics, Sweep, build_sweep, compiled_sweep_fns, data_arrays, train


def flatten_params(params: dict[str, list]) -> dict[str, np.ndarray]:
    """``{"xi_hat": [a, b]}`` -> ``{"xi_hat/0": a, "xi_hat/1": b}`` (host arrays)."""
    return {f"{name}/{l}": np.asarray(a) for name, arrays in params.items() for l, a in enumerate(arrays)}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Inverse of :func:`flatten_params`."""
    params: dict[str, dict[int, np.ndarray]] = {}
    for key, array in flat.items():
        name, layer = key.rsplit("/", 1)
        params.setdefault(name, {})[int(layer)] = array
    return {name: [layers[l] for l in sorted(layers)] for name, layers in params.items()}


def load_params(workdir: str | os.PathLike, method: str) -> dict[str, list[np.ndarray]]:
    """Final parameters of ``method`` in a finished workdir, with a leading run axis."""
    path = Path(workdir) / "params" / f"{method}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: has method {method!r} finished training there?")
    with np.load(path) as archive:
        return unflatten_params(dict(archive))


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sweep_for(config: TrainConfig, method: str) -> Sweep:
    if method == "bp" or (method == "svd" and not config.modes):
        modes: list = [None]
    elif method == "svd":  # p modes per layer, capped at the layer's full rank
        ranks = [min(a, b) for a, b in zip(config.widths[:-1], config.widths[1:])]
        modes = [[min(p, r) for r in ranks] for p in config.modes]
    else:
        modes = list(config.modes)
    return build_sweep(
        config.widths, method, modes=modes, seeds=config.seeds, learning_rates=config.learning_rates,
        batch_size=config.batch_size, lr_halving_epochs=config.lr_halving_epochs,
        weight_decay=config.weight_decay, svd_orthogonality=config.svd_orthogonality,
        svd_sparsity=config.svd_sparsity, dtype=config.dtype,
    )


class _History:
    """Per-method metrics so far: the initial accuracy and one EpochMetrics row per epoch."""

    def __init__(self, initial: np.ndarray, rows: list[EpochMetrics], wall: float):
        self.initial, self.rows, self.wall = initial, rows, wall

    def arrays(self) -> dict[str, np.ndarray]:
        stacked = {f: np.stack([getattr(r, f) for r in self.rows]) for f in EpochMetrics._fields} if self.rows else {}
        return {"initial_test_accuracy": self.initial, "wall_time_s": np.asarray(self.wall),
                **{f"metrics/{k}": v for k, v in stacked.items()}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "_History":
        fields = [arrays.get(f"metrics/{f}") for f in EpochMetrics._fields]
        rows = [] if fields[0] is None else [EpochMetrics(*(f[e] for f in fields)) for e in range(len(fields[0]))]
        return cls(arrays["initial_test_accuracy"], rows, float(arrays["wall_time_s"]))


def _metric_lines(sweep: Sweep, history: _History) -> list[str]:
    lines = []
    for run, info in enumerate(sweep.infos):
        base = {"method": info.method, "run": run, "modes": list(info.modes), "seed": info.seed,
                "learning_rate": info.learning_rate}
        lines.append(json.dumps({**base, "epoch": 0, "test_accuracy": float(history.initial[run])}))
        for epoch, row in enumerate(history.rows, start=1):
            values = {f: float(getattr(row, f)[run]) for f in EpochMetrics._fields}
            lines.append(json.dumps({**base, "epoch": epoch, **values}))
    return lines


def train_and_evaluate(
    config: TrainConfig, workdir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Trains every method of ``config`` as one vmapped sweep each and fills ``workdir``.

    Args:
      config: the resolved configuration.
      workdir: output folder; must be new or empty unless ``resume``.
      resume: continue the sweep recorded in ``workdir`` from its checkpoints; methods that
        finished are not retrained.
      progress: show a progress bar per method.
      stop_after_epoch: stop (as if killed) once this many epochs are done; for testing resume.

    Returns:
      The summary written to ``summary.json``.
    """
    workdir = Path(workdir)
    sweeps = {method: _sweep_for(config, method) for method in config.methods}
    if resume:
        if not (workdir / "config.json").is_file():
            raise ConfigError(f"cannot resume: {workdir} holds no config.json from an earlier run")
    elif workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(
            f"workdir {workdir} is not empty: pass --resume {workdir} to continue the run there, "
            "or choose another --workdir"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(workdir / "config.json", json.dumps(config.to_json(), indent=2) + "\n")

    dataset = load_dataset(config.dataset, config.data_dir)
    data = data_arrays(dataset, config.dtype)
    histories: dict[str, _History] = {}
    metrics_path = workdir / "metrics.jsonl"

    def rewrite_metrics():
        lines = [l for m, h in histories.items() for l in _metric_lines(sweeps[m], h)]
        _atomic_write_text(metrics_path, "".join(line + "\n" for line in lines))

    summary_runs = []
    for method, sweep in sweeps.items():
        checkpoint = workdir / "checkpoints" / f"{method}.npz"
        init_fn = compiled_sweep_fns(sweep.recipe)[0]
        template = jax.eval_shape(init_fn, sweep.runs)
        state, done = None, 0
        if resume and checkpoint.is_file():
            with np.load(checkpoint) as archive:
                arrays = dict(archive)
            leaves = [arrays[f"state/{i}"] for i in range(len(jax.tree.leaves(template)))]
            state = jax.tree.unflatten(jax.tree.structure(template), leaves)
            histories[method] = _History.from_arrays(arrays)
            done = len(histories[method].rows)
        remaining = config.epochs - done
        if stop_after_epoch is not None:
            remaining = min(remaining, max(stop_after_epoch - done, 0))
        bar = tqdm(total=config.epochs, initial=done, desc=method, disable=not progress, unit="epoch")

        def on_epoch(epoch, new_state, metrics, method=method, checkpoint=checkpoint, bar=bar):
            history = histories[method]
            history.rows.append(metrics)
            history.wall = wall_before + (time.perf_counter() - started)
            accuracy = metrics.test_accuracy
            bar.set_postfix_str(
                f"test acc {accuracy.mean():.4f} [{accuracy.min():.4f}, {accuracy.max():.4f}]"
            )
            bar.update(1)
            epochs_done = epoch + 1
            if config.checkpoint_every and (
                epochs_done % config.checkpoint_every == 0 or epochs_done == config.epochs
            ):
                leaves = {f"state/{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(new_state))}
                _atomic_savez(checkpoint, {**leaves, **history.arrays()})
            rewrite_metrics()

        if remaining > 0 or method not in histories:
            wall_before = histories[method].wall if method in histories else 0.0
            started = time.perf_counter()
            fresh = method not in histories
            if fresh:
                histories[method] = _History(np.zeros(len(sweep.infos)), [], 0.0)

            def on_start(accuracy, history=histories[method], fresh=fresh):
                if fresh:
                    history.initial = accuracy

            state = train(
                sweep.recipe, sweep.runs, data, epochs=remaining, state=state, start_epoch=done,
                on_start=on_start, on_epoch=on_epoch,
            ).state
            rewrite_metrics()
        bar.close()
        history = histories[method]
        if len(history.rows) < config.epochs:
            return {"stopped_after_epoch": len(history.rows)}
        _atomic_savez(workdir / "params" / f"{method}.npz", flatten_params(jax.device_get(state.params)))
        final = history.rows[-1].test_accuracy
        for run, info in enumerate(sweep.infos):
            summary_runs.append({
                "method": info.method, "modes": list(info.modes), "seed": info.seed,
                "learning_rate": info.learning_rate, "final_test_accuracy": float(final[run]),
                "param_count": info.param_count, "epochs": config.epochs,
                "wall_time_s": history.wall, "runs_in_program": len(sweep.infos),
            })
    summary = {"dataset": dataset.name, "runs": summary_runs}
    _atomic_write_text(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def resolve_config(
    file_values: dict[str, Any] | None, overrides: dict[str, Any] | None
) -> TrainConfig:
    """Defaults, then a config file's values, then command-line overrides."""
    return make_config(overrides, base=make_config(file_values))
