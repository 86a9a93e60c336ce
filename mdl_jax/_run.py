"""Runs a configured sweep into a workdir: config, metrics, checkpoints, parameters, summary.

A workdir holds::

    config.json           the resolved configuration
    metrics.jsonl         one line per run per epoch (epoch 0: the untrained network)
    checkpoints/M/E/      orbax checkpoint of method M after epoch E: state (parameters,
                          optimizer, divergence flags) and metrics so far; the last few kept
    params/M.npz          final parameters of method M, stacked along the run axis
    summary.json          per run: method, modes, seed, lr, final test accuracy, size, time,
                          and divergence (epoch and cause) if the run was frozen

Every run's randomness is a function of (seed, epoch), so a sweep resumed from a checkpoint
ends with exactly the numbers of an uninterrupted one. In a multi-process run, every process
trains and checkpoints its share; process 0 writes the other files.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from mdl_jax._config import ConfigError, TrainConfig
from mdl_jax._data import load_dataset
from mdl_jax._train import DIVERGENCE_CAUSES, EpochMetrics, Sweep, build_sweep, compiled_sweep_fns, data_arrays, train

#: Testing aid: kill the process (SIGKILL) right after the checkpoint of this epoch is written.
FAULT_KILL_ENV = "MDL_JAX_FAULT_KILL_AFTER_EPOCH"


class TrainingDiverged(RuntimeError):
    """Every run of a sweep diverged; the summary is written before this is raised."""


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


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    write(tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


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
        svd_sparsity=config.svd_sparsity, dtype=config.dtype, loss=config.loss,
    )


class _History:
    """Per-method metrics so far: the initial accuracy and one EpochMetrics row per epoch."""

    def __init__(self, initial: np.ndarray, rows: list[EpochMetrics], wall: float):
        self.initial, self.rows, self.wall = initial, rows, wall

    def to_json(self) -> dict[str, Any]:
        return {
            "initial_test_accuracy": np.asarray(self.initial).tolist(), "wall_time_s": self.wall,
            "rows": [{f: np.asarray(v).tolist() for f, v in row._asdict().items()} for row in self.rows],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "_History":
        rows = [EpochMetrics(**{f: np.asarray(v) for f, v in row.items()}) for row in data["rows"]]
        return cls(np.asarray(data["initial_test_accuracy"]), rows, float(data["wall_time_s"]))


def _divergence(history: _History, run: int) -> dict[str, Any]:
    last = history.rows[-1]
    epoch = int(last.diverged_epoch[run])
    if epoch < 0:
        return {"diverged": False}
    return {"diverged": True, "diverged_epoch": epoch + 1, "divergence_cause": DIVERGENCE_CAUSES[int(last.divergence_cause[run])]}


def _metric_lines(sweep: Sweep, history: _History, epochs: range) -> str:
    """``metrics.jsonl`` lines of ``epochs`` (0: the untrained network), epoch by epoch, every
    run within an epoch: appending epoch after epoch and rewriting from a checkpoint agree."""
    lines = []
    for epoch in epochs:
        row = history.rows[epoch - 1] if epoch else None
        for run, info in enumerate(sweep.infos):
            base = {"method": info.method, "run": run, "modes": list(info.modes), "seed": info.seed,
                    "learning_rate": info.learning_rate, "epoch": epoch}
            if row is None:
                lines.append(json.dumps({**base, "test_accuracy": float(history.initial[run])}))
                continue
            values = {f: float(getattr(row, f)[run]) for f in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}
            diverged = 0 <= int(row.diverged_epoch[run]) < epoch
            lines.append(json.dumps({**base, **values, **({"frozen": True} if diverged else {})}))
    return "".join(line + "\n" for line in lines)


def _checkpoints(workdir: Path, method: str, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager((workdir / "checkpoints" / method).absolute(), options=options)


def train_and_evaluate(
    config: TrainConfig, workdir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Trains every method of ``config`` as one vmapped sweep each and fills ``workdir``.

    Args:
      config: the resolved configuration.
      workdir: output folder; must be new or empty unless ``resume``.
      resume: continue the sweep recorded in ``workdir`` from its latest checkpoints;
        methods that finished are not retrained.
      progress: show a progress bar per method.
      stop_after_epoch: stop (as if killed) once this many epochs are done; for testing resume.

    Returns:
      The summary written to ``summary.json``.

    Raises:
      ConfigError: a workdir that is not empty (without ``resume``), or nothing to resume.
      TrainingDiverged: every run diverged (the summary is written first).
    """
    workdir = Path(workdir)
    writer = jax.process_index() == 0
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
    if writer:
        _write_text(workdir / "config.json", json.dumps(config.to_json(), indent=2) + "\n")

    dataset = load_dataset(config.dataset, config.data_dir)
    data = data_arrays(dataset, config.dtype)
    histories: dict[str, _History] = {}
    kill_after = int(os.environ.get(FAULT_KILL_ENV, "0")) or None

    metrics_path = workdir / "metrics.jsonl"

    def rewrite_metrics():
        """Everything recorded so far (on a resume: drops lines past the restored checkpoints)."""
        if writer:
            _write_text(metrics_path, "".join(
                _metric_lines(sweeps[m], h, range(len(h.rows) + 1)) for m, h in histories.items()
            ))

    def append_metrics(method: str, epochs: range):
        if writer:
            with metrics_path.open("a") as file:
                file.write(_metric_lines(sweeps[method], histories[method], epochs))

    if not resume:
        rewrite_metrics()

    summary_runs = []
    for method, sweep in sweeps.items():
        manager = _checkpoints(workdir, method, config.checkpoint_keep)
        state, done = None, 0
        if resume and manager.latest_step() is not None:
            abstract = jax.eval_shape(compiled_sweep_fns(sweep.recipe)[0], sweep.runs)
            restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore(),
            ))
            state, histories[method] = restored.state, _History.from_json(restored.history)
            done = len(histories[method].rows)
        remaining = config.epochs - done
        if stop_after_epoch is not None:
            remaining = min(remaining, max(stop_after_epoch - done, 0))
        if resume:
            rewrite_metrics()  # before a fresh method gets its empty history
        if method not in histories:
            histories[method] = _History(np.zeros(len(sweep.infos)), [], 0.0)
        history = histories[method]
        bar = tqdm(total=config.epochs, initial=done, desc=method, disable=not progress or not writer, unit="epoch")
        wall_before, started = history.wall, time.perf_counter()

        def on_start(accuracy, history=history, method=method, fresh=done == 0):
            if fresh:
                history.initial = accuracy
                append_metrics(method, range(1))

        def on_epoch(epoch, metrics, get_state, history=history, manager=manager, bar=bar, method=method):
            history.rows.append(metrics)
            append_metrics(method, range(epoch + 1, epoch + 2))
            history.wall = wall_before + (time.perf_counter() - started)
            accuracy, diverged = metrics.test_accuracy, int(np.sum(metrics.diverged_epoch >= 0))
            bar.set_postfix_str(
                f"test acc {accuracy.mean():.4f} [{accuracy.min():.4f}, {accuracy.max():.4f}]"
                + (f", diverged {diverged}/{len(accuracy)}" if diverged else "")
            )
            bar.update(1)
            epochs_done = epoch + 1
            if config.checkpoint_every and (epochs_done % config.checkpoint_every == 0 or epochs_done == config.epochs):
                manager.save(epochs_done, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(get_state()), history=ocp.args.JsonSave(history.to_json()),
                ))
                if kill_after == epochs_done:
                    manager.wait_until_finished()
                    os.kill(os.getpid(), signal.SIGKILL)

        if remaining > 0:
            state = train(
                sweep.recipe, sweep.runs, data, epochs=remaining, state=state, start_epoch=done,
                on_start=on_start, on_epoch=on_epoch, max_runs_per_chunk=config.max_runs_per_chunk,
            ).state
        manager.wait_until_finished()
        manager.close()
        bar.close()
        if len(history.rows) < config.epochs:
            return {"stopped_after_epoch": len(history.rows)}
        if writer:
            params = jax.tree.map(np.asarray, state.params)
            _atomic_write(workdir / "params" / f"{method}.npz", lambda tmp: (
                tmp.parent.mkdir(parents=True, exist_ok=True), np.savez(tmp, **flatten_params(params))))
        final = history.rows[-1].test_accuracy
        for run, info in enumerate(sweep.infos):
            summary_runs.append({
                "method": info.method, "modes": list(info.modes), "seed": info.seed,
                "learning_rate": info.learning_rate, "final_test_accuracy": float(final[run]),
                "param_count": info.param_count, "epochs": config.epochs,
                "wall_time_s": history.wall, "runs_in_program": len(sweep.infos), **_divergence(history, run),
            })
    summary = {"dataset": dataset.name, "runs": summary_runs}
    if writer:
        _write_text(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if summary_runs and all(run["diverged"] for run in summary_runs):
        first = min(summary_runs, key=lambda r: r["diverged_epoch"])
        raise TrainingDiverged(
            f"all {len(summary_runs)} runs diverged (first: {first['method']}, seed {first['seed']}, "
            f"lr {first['learning_rate']:g}, epoch {first['diverged_epoch']}: {first['divergence_cause']}); "
            f"lower the learning rate. Results so far are in {workdir}"
        )
    return summary
