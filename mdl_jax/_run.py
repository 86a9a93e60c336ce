"""The run driver: trains a configured sweep into a workdir and resumes it.

A workdir holds::

    config.json           the resolved configuration
    fingerprint.json      the settings that fix the runs and the data's shapes and checksum;
                          ``--resume`` refuses a config.json or data that disagree with it
    metrics.jsonl         one line per run per epoch (epoch 0: the untrained network); a loss
                          that is not finite is written as null
    checkpoints/M/E/      orbax checkpoint of method M after epoch E: state (parameters,
                          optimizer, divergence flags) and metrics so far; the last few kept,
                          and always the last epoch's
    params/M.npz          final parameters of method M, stacked along the run axis, with each
                          run's mode mask (inactive modes hold zeros); read with load_params
    summary.json          per run: method, modes, seed, lr, final test accuracy, size, time,
                          divergence; and ``table``: mean and std over seeds per method, modes
                          and learning rate

The driver is four parts a reader can see at once: :func:`prepare` checks everything (config,
workdir, data, widths against the data, a resume against the fingerprint) before the first
byte is written; :func:`_restore` reads a method's latest checkpoint; a :class:`Recorder` owns
the metrics file, the progress display and the checkpoints; :func:`_summarise` writes the
summary. Every run's randomness is a function of (seed, epoch), so a resumed sweep ends with
exactly the numbers of an uninterrupted one. In a multi-process run, every process trains and
checkpoints its share; process 0 writes the other files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from mdl_jax._config import ConfigError, TrainConfig, sweep_modes
from mdl_jax._data import DataError, Dataset, fingerprint, hold_out, load_dataset
from mdl_jax._lock import holds_only_lock, workdir_lock
from mdl_jax._methods import METHODS, make_spec
from mdl_jax._models import init_params, param_count
from mdl_jax._spec import NetworkSpec
from mdl_jax._train import (
    DIVERGENCE_CAUSES, EpochMetrics, Sweep, build_sweep, check_data, compiled_sweep_fns, data_arrays, train,
)


class TrainingDiverged(RuntimeError):
    """Every run of a sweep diverged; the summary is written before this is raised."""


# --- files -------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, value: Any) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
    """``{prefix + path: leaf}`` of a pytree, paths as ``jax.tree_util.keystr`` writes them."""
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat(prefix: str, flat: dict[str, np.ndarray], like):
    """The pytree of structure ``like`` whose leaves :func:`_flat` wrote under ``prefix``."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(treedef, [flat[prefix + jax.tree_util.keystr(p)] for p, _ in paths])


class SavedRuns(NamedTuple):
    """The final state of one method's runs, as :func:`load_params` reads it from a workdir.

    ``apply(select_run(saved.params, i), x, spec=saved.spec)`` evaluates run ``i`` to the test
    accuracy the run reported: its inactive (padded) modes are exact zeros. ``mode_mask`` says
    which modes each run had, for analyses that rank or count modes.
    """

    params: dict[str, list[np.ndarray]]  # leading run axis; padded to the largest mode count
    mode_mask: tuple[np.ndarray, ...]  # per layer (runs, p_max_l) of 0/1 at the end (after pruning); () without modes
    spec: NetworkSpec  # the padded architecture every run shares
    runs: list[dict[str, Any]]  # per run: method, modes, seed, learning_rate, param_count


def load_params(workdir: str | os.PathLike, method: str) -> SavedRuns:
    """Final parameters of ``method`` in a finished workdir (see :class:`SavedRuns`)."""
    path = Path(workdir) / "params" / f"{method}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: has method {method!r} finished training there?")
    with np.load(path) as archive:
        flat = dict(archive)
    meta = json.loads(str(flat["meta"]))
    spec = make_spec(meta["widths"], meta["modes"] or None, method)
    like = jax.eval_shape(lambda k: init_params(k, spec, dtype=jnp.dtype(meta["dtype"])), jax.random.PRNGKey(0))
    masks = tuple(flat[f"mode_mask[{l}]"] for l in range(len(spec.modes)))
    return SavedRuns(_unflat("params", flat, like), masks, spec, meta["runs"])


def _save_params(path: Path, sweep: Sweep, params, mode_mask) -> None:
    spec = sweep.recipe.spec
    meta = {"widths": list(spec.widths), "modes": list(spec.modes), "dtype": sweep.recipe.dtype,
            "runs": [i._asdict() for i in sweep.infos]}
    flat = _flat("params", params) | _flat("mode_mask", list(mode_mask))
    _atomic_write(path, lambda tmp: np.savez(tmp, meta=np.asarray(json.dumps(meta)), **flat))


def load_metrics(workdir: str | os.PathLike, method: str, field: str = "test_accuracy") -> np.ndarray:
    """One metric of every run of ``method`` from ``metrics.jsonl``: ``(epochs + 1, runs)``,
    row 0 the untrained network (NaN where the file holds null or no value)."""
    lines = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in lines if line["method"] == method]
    if not lines:
        raise FileNotFoundError(f"{workdir}/metrics.jsonl holds no line of method {method!r}")
    values = np.full((1 + max(l["epoch"] for l in lines), 1 + max(l["run"] for l in lines)), np.nan)
    for line in lines:
        if line.get(field) is not None:
            values[line["epoch"], line["run"]] = line[field]
    return values


# --- checks before anything is written ----------------------------------------------------


class Prepared(NamedTuple):
    """What :func:`prepare` checked: the sweeps, the data and the run's fingerprint."""

    sweeps: dict[str, Sweep]
    dataset: Dataset
    fingerprint: dict[str, Any]


def _sweeps(config: TrainConfig) -> dict[str, Sweep]:
    recipe = {f: getattr(config, f) for f in ("batch_size", "lr_halving_epochs", "weight_decay", "svd_orthogonality",
                                               "svd_sparsity", "dtype", "loss", "optimizer")}
    pruning = lambda method: (
        {"prune_every": config.prune_every, "prune_until": config.prune_until, "min_modes": config.min_modes,
         "prune_taus": config.prune_tau} if config.prune_every and METHODS[method].has_modes else {})
    return {
        method: build_sweep(config.widths, method, modes=sweep_modes(config, method), seeds=config.seeds,
                            learning_rates=config.learning_rates, **recipe, **pruning(method))
        for method in config.methods
    }


def _check_workdir(workdir: Path, resume: bool) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir {workdir} is a file, not a folder: choose another --workdir")
    if resume and not (workdir / "config.json").is_file():
        what = "does not exist" if not workdir.exists() else "holds no config.json"
        raise ConfigError(f"no run to resume in {workdir}: it {what}; start one with --workdir {workdir}")
    if not resume and workdir.exists() and not holds_only_lock(workdir):
        raise ConfigError(
            f"workdir {workdir} is not empty: pass --resume {workdir} to continue the run there, "
            "or choose another --workdir"
        )


def _changed(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{key!r} from {stored.get(key)!r} to {current.get(key)!r}"
            for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]


def _with_defaults(identity: dict[str, Any]) -> dict[str, Any]:
    """A stored config identity with the keys added since it was written at their defaults."""
    return {**TrainConfig().identity(), **identity}


def _check_resume(workdir: Path, config: TrainConfig, data_print: dict[str, Any]) -> None:
    path = workdir / "fingerprint.json"
    if not path.is_file():
        raise ConfigError(f"cannot resume {workdir}: it has no fingerprint.json (the run never got past its checks)")
    stored = json.loads(path.read_text())
    changes = _changed(_with_defaults(stored["config"]), config.identity())
    if changes:
        raise ConfigError(
            f"config.json in {workdir} changes {'; '.join(changes)} since the run started; --resume only "
            "accepts a larger 'epochs': restore config.json, or train the new settings in a new workdir"
        )
    changes = _changed(stored["data"], data_print)
    if changes:
        raise DataError(
            f"the data differ from those the run in {workdir} was trained on ({'; '.join(changes)}): "
            "point --data-dir at the original files"
        )


def prepare(config: TrainConfig, workdir: Path, *, resume: bool, dataset: Dataset | None = None) -> Prepared:
    """Checks the config, the workdir, the data and (on a resume) the fingerprint.

    Raises :class:`ConfigError`, :class:`DataError` or :class:`SpecError` naming the fix;
    writes nothing, so a failed check leaves the workdir as it found it.
    """
    _check_workdir(workdir, resume)
    sweeps = _sweeps(config)
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    run_print = {"config": config.identity(), "data": fingerprint(dataset)}
    dataset = hold_out(dataset, config.validation)
    for sweep in sweeps.values():
        check_data(sweep.recipe, dataset)
    if resume:
        _check_resume(workdir, config, run_print["data"])
    return Prepared(sweeps, dataset, run_print)


# --- metrics, progress and checkpoints ----------------------------------------------------


class History(NamedTuple):
    """A method's metrics so far: the initial test accuracy and one row per epoch."""

    initial: np.ndarray
    rows: list[EpochMetrics]
    wall_time_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "initial_test_accuracy": np.asarray(self.initial).tolist(), "wall_time_s": self.wall_time_s,
            "rows": [{f: np.asarray(v).tolist() for f, v in row._asdict().items()} for row in self.rows],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        rows = [EpochMetrics(**{f: None if v is None else np.asarray(v) for f, v in row.items()}) for row in data["rows"]]
        return cls(np.asarray(data["initial_test_accuracy"]), rows, float(data["wall_time_s"]))


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def metric_lines(sweep: Sweep, history: History, epochs: range) -> str:
    """``metrics.jsonl`` lines of ``epochs`` (0: the untrained network), every run of each."""
    lines = []
    for epoch in epochs:
        row = history.rows[epoch - 1] if epoch else None
        for run, info in enumerate(sweep.infos):
            line = {"method": info.method, "run": run, "modes": list(info.modes), "seed": info.seed,
                    "learning_rate": info.learning_rate, "epoch": epoch}
            if sweep.recipe.prune_every:
                line["prune_tau"] = info.prune_tau
            if row is None:
                line["test_accuracy"] = _finite(history.initial[run])
            else:
                line |= {f: _finite(getattr(row, f)[run]) for f in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}
                if row.val_loss is not None:
                    line |= {f: _finite(getattr(row, f)[run]) for f in ("val_loss", "val_accuracy")}
                if sweep.recipe.prune_every and row.active_modes is not None:
                    line["active_modes"] = np.asarray(row.active_modes[run]).astype(int).tolist()
                if 0 <= int(row.diverged_epoch[run]) < epoch:
                    line["frozen"] = True
            lines.append(json.dumps(line, allow_nan=False))
    return "".join(line + "\n" for line in lines)


class Progress:
    """A live bar on a terminal; one plain line per epoch when the output is piped."""

    def __init__(self, method: str, total: int, done: int, *, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.method, self.total, self.enabled = method, total, enabled
        self.live = enabled and self.stream.isatty()
        self.bar = tqdm(total=total, initial=done, desc=method, unit="epoch", file=self.stream) if self.live else None

    def update(self, epoch: int, metrics: EpochMetrics, wall: float) -> None:
        accuracy, diverged = metrics.test_accuracy, int(np.sum(metrics.diverged_epoch >= 0))
        text = (f"test accuracy mean {accuracy.mean():.4f} (min {accuracy.min():.4f}, max {accuracy.max():.4f}"
                f" over {len(accuracy)} runs)" + (f", diverged {diverged}/{len(accuracy)}" if diverged else ""))
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        elif self.enabled:
            print(f"{self.method} epoch {epoch}/{self.total}: {text}, {wall:.1f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Recorder:
    """Owns one method's metrics file lines, progress display and checkpoints."""

    def __init__(self, workdir: Path, method: str, sweep: Sweep, config: TrainConfig, *, identity: dict,
                 writer: bool, progress: bool, on_checkpoint: Callable[[str, int], Any] | None):
        self.workdir, self.method, self.sweep, self.config = workdir, method, sweep, config
        self.identity, self.writer, self.on_checkpoint = identity, writer, on_checkpoint
        options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint_keep, create=True)
        self.manager = ocp.CheckpointManager((workdir / "checkpoints" / method).absolute(), options=options)
        self.history, self.progress_enabled = History(np.zeros(len(sweep.infos)), [], 0.0), progress

    def start(self, history: History) -> None:
        self.history, self.started = history, time.perf_counter()
        self.wall_before = history.wall_time_s
        self.progress = Progress(self.method, self.config.epochs, len(history.rows),
                                 enabled=self.progress_enabled and self.writer)

    def _append(self, epochs: range) -> None:
        if self.writer:
            with (self.workdir / "metrics.jsonl").open("a") as file:
                file.write(metric_lines(self.sweep, self.history, epochs))

    def on_start(self, accuracy: np.ndarray) -> None:
        if not self.history.rows:
            self.history = self.history._replace(initial=accuracy)
            self._append(range(1))

    def on_epoch(self, epoch: int, metrics: EpochMetrics, get_state) -> None:
        wall = self.wall_before + time.perf_counter() - self.started
        self.history = History(self.history.initial, self.history.rows + [metrics], wall)
        self._append(range(epoch + 1, epoch + 2))
        self.progress.update(epoch + 1, metrics, wall)
        done, every = epoch + 1, self.config.checkpoint_every
        if done == self.config.epochs or (every and done % every == 0):
            with _interrupt_deferred():  # Ctrl-C inside orbax's save could leave its threads waiting
                self.manager.save(done, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(get_state()),
                    history=ocp.args.JsonSave({**self.history.to_json(), "identity": self.identity}),
                ))
                if self.on_checkpoint is not None:
                    self.manager.wait_until_finished()
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.method, done)

    def close(self) -> None:
        """Waits for a checkpoint being written (also on Ctrl-C or a crash, so that no save is
        cut off at interpreter exit) and closes the manager and the display; idempotent."""
        if self.manager is not None:
            manager, self.manager = self.manager, None
            with _interrupt_deferred():
                manager.wait_until_finished()
                manager.close()
        if getattr(self, "progress", None) is not None:
            self.progress.close()
            self.progress = None


@contextlib.contextmanager
def _interrupt_deferred():
    """Ctrl-C (SIGINT) inside the block takes effect when the block ends, so a checkpoint is
    written whole; only the main thread can defer signals, elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _restore(recorder: Recorder) -> tuple[Any, History]:
    """The latest checkpoint's state and history, or ``(None, empty history)``."""
    manager, sweep = recorder.manager, recorder.sweep
    step = manager.latest_step()
    if step is None:
        return None, recorder.history
    abstract = jax.eval_shape(compiled_sweep_fns(sweep.recipe)[0], sweep.runs)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore(),
    ))
    stored = restored.history.get("identity") or {}
    if stored:
        stored = {**stored, "config": _with_defaults(stored.get("config", {}))}
    if stored != recorder.identity:
        raise ConfigError(
            f"the checkpoints of {recorder.method!r} in {recorder.workdir} were written by other settings than "
            "its fingerprint.json: the workdir was edited by hand; train in a new workdir"
        )
    history = History.from_json(restored.history)
    if len(history.rows) > recorder.config.epochs:
        raise ConfigError(
            f"'epochs' is {recorder.config.epochs}, but {recorder.method!r} has already trained "
            f"{len(history.rows)} epochs in {recorder.workdir}: --resume can only add epochs"
        )
    return restored.state, history


# --- the summary --------------------------------------------------------------------------


def _divergence(history: History, run: int) -> dict[str, Any]:
    last = history.rows[-1]
    epoch = int(last.diverged_epoch[run])
    if epoch < 0:
        return {"diverged": False}
    return {"diverged": True, "diverged_epoch": epoch + 1,
            "divergence_cause": DIVERGENCE_CAUSES[int(last.divergence_cause[run])]}


def _run_summaries(sweep: Sweep, history: History, epochs: int) -> list[dict[str, Any]]:
    final = history.rows[-1].test_accuracy
    return [{
        "method": info.method, "modes": list(info.modes), "seed": info.seed, "learning_rate": info.learning_rate,
        "final_test_accuracy": _finite(final[run]), "param_count": info.param_count, "epochs": epochs,
        "wall_time_s": history.wall_time_s, "runs_in_program": len(sweep.infos), **_divergence(history, run),
        **_pruned(sweep, history, run, info), **_selected(history, run),
    } for run, info in enumerate(sweep.infos)]


def _selected(history: History, run: int) -> dict[str, Any]:
    """With a validation set: the epoch (1-based) of the lowest validation loss and the test
    accuracy there (early-stopping selection; nothing without a validation set)."""
    if history.rows[-1].val_loss is None:
        return {}
    loss = np.asarray([row.val_loss[run] for row in history.rows], float)
    best = int(np.argmin(np.where(np.isfinite(loss), loss, np.inf)))
    return {"best_val_epoch": best + 1, "best_val_loss": _finite(loss[best]),
            "test_accuracy_at_best_val": _finite(history.rows[best].test_accuracy[run])}


def _pruned(sweep: Sweep, history: History, run: int, info) -> dict[str, Any]:
    """What pruning left of a run: its threshold, final modes per mode layer and their trainable
    parameters (nothing when the sweep does not prune)."""
    active = history.rows[-1].active_modes
    if not sweep.recipe.prune_every or active is None:
        return {}
    final = [int(m) for m in np.asarray(active[run])]
    spec = make_spec(sweep.recipe.spec.widths, final, sweep.recipe.spec.method)
    return {"prune_tau": info.prune_tau, "final_modes": final, "final_param_count": param_count(spec)}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of the final test accuracy over seeds, per method, mode
    counts and learning rate (diverged runs counted apart and left out of the mean)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["method"], tuple(run["modes"]), run["learning_rate"], run.get("prune_tau")), []).append(run)
    table = []
    for (method, modes, lr, prune_tau), members in groups.items():
        accuracy = np.asarray([r["final_test_accuracy"] for r in members if not r["diverged"]], float)
        table.append({
            "method": method, "modes": list(modes), "learning_rate": lr, "seeds": len(members),
            "param_count": members[0]["param_count"], "diverged": len(members) - len(accuracy),
            "mean_test_accuracy": float(accuracy.mean()) if len(accuracy) else None,
            "std_test_accuracy": float(accuracy.std()) if len(accuracy) else None,
        })
        if prune_tau is not None:  # what pruning left, mean over seeds
            table[-1] |= {"prune_tau": prune_tau,
                          "mean_final_modes": np.mean([r["final_modes"] for r in members], 0).tolist(),
                          "mean_final_param_count": float(np.mean([r["final_param_count"] for r in members]))}
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    """The aggregated table as aligned text, one line per method, modes and learning rate."""
    def modes_text(row):  # the starting modes; if pruned, the threshold and what was left (mean over seeds)
        text = ",".join(map(str, row["modes"])) or "-"
        if "prune_tau" in row:
            text += f" tau {row['prune_tau']:g} -> " + ",".join(f"{m:.3g}" for m in row["mean_final_modes"])
        return text

    width = max([16] + [len(modes_text(row)) + 2 for row in table])
    lines = [f"{'method':<12}{'modes':<{width}}{'lr':>9}{'seeds':>7}{'params':>10}  test accuracy (mean ± std over seeds)"]
    for row in table:
        accuracy = ("all diverged" if row["mean_test_accuracy"] is None
                    else f"{100 * row['mean_test_accuracy']:.2f} % ± {100 * row['std_test_accuracy']:.2f}")
        diverged = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        modes = modes_text(row)
        params = round(row.get("mean_final_param_count", row["param_count"]))  # after pruning, if it pruned
        lines.append(f"{row['method']:<12}{modes:<{width}}{row['learning_rate']:>9.3g}{row['seeds']:>7}"
                     f"{params:>10}  {accuracy}{diverged}")
    return "\n".join(lines)


def _summarise(workdir: Path, dataset: Dataset, runs: list[dict[str, Any]], writer: bool) -> dict[str, Any]:
    summary = {"dataset": dataset.name, "runs": runs, "table": aggregate(runs)}
    if writer:
        _write_json(workdir / "summary.json", summary)
    if runs and all(run["diverged"] for run in runs):
        first = min(runs, key=lambda r: r["diverged_epoch"])
        raise TrainingDiverged(
            f"all {len(runs)} runs diverged (first: {first['method']}, seed {first['seed']}, "
            f"lr {first['learning_rate']:g}, epoch {first['diverged_epoch']}: {first['divergence_cause']}); "
            f"lower the learning rate. Results so far are in {workdir}"
        )
    return summary


# --- the driver ---------------------------------------------------------------------------


def _train_method(recorder: Recorder, data, config: TrainConfig, state, history: History) -> History:
    """Trains the remaining epochs of one method from ``state`` and saves its parameters (the
    caller closes the recorder, on every exit path)."""
    recorder.start(history)
    remaining = config.epochs - len(history.rows)
    if remaining > 0:
        sweep = recorder.sweep
        state = train(
            sweep.recipe, sweep.runs, data, epochs=remaining, state=state, start_epoch=len(history.rows),
            on_start=recorder.on_start, on_epoch=recorder.on_epoch, max_runs_per_chunk=config.max_runs_per_chunk,
            max_padding=config.max_padding,
        ).state
    params_path = recorder.workdir / "params" / f"{recorder.method}.npz"
    if recorder.writer and (remaining > 0 or not params_path.is_file()):
        _save_params(params_path, recorder.sweep, jax.tree.map(np.asarray, state.params), jax.tree.map(np.asarray, state.mode_mask))
    return recorder.history


def train_and_evaluate(
    config: TrainConfig, workdir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
    on_checkpoint: Callable[[str, int], Any] | None = None, dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Trains every method of ``config`` as one vmapped sweep each and fills ``workdir``.

    Args:
      config: the resolved configuration.
      workdir: output folder; must be new or empty unless ``resume``.
      resume: continue the sweep recorded in ``workdir`` from its latest checkpoints. The
        config must fix the same runs as the one the workdir was started with (only
        ``epochs`` may grow, and ``data_dir`` may point elsewhere if the data are the same);
        methods that finished are not retrained.
      progress: a live bar per method on a terminal, one line per epoch otherwise.
      on_checkpoint: called as ``on_checkpoint(method, epoch)`` once each checkpoint is on
        disk (tests use it to simulate a crash).
      dataset: the data, when the caller holds them (e.g. a slice, or a generated set);
        default: loaded from ``config.dataset`` and ``config.data_dir``. Either way the
        fingerprint records their content, so a resume must bring the same data.

    Returns:
      The summary written to ``summary.json``.

    Raises:
      ConfigError, DataError, SpecError: a check failed; nothing was written.
      TrainingDiverged: every run diverged (the summary is written first).
      WorkdirBusy: another process is running in ``workdir`` (its lock, ``WORKDIR/.lock``, is
        held for the whole run; see :mod:`mdl_jax._lock`).
    """
    workdir, writer = Path(workdir), jax.process_index() == 0
    prepared = prepare(config, workdir, resume=resume, dataset=dataset)
    if jax.process_count() > 1:  # every process checks the workdir before process 0 writes into it
        multihost_utils.sync_global_devices("mdl_jax: workdir checked")
    with _owned(workdir, resume) if writer else contextlib.nullcontext():
        return _train_methods(config, workdir, prepared, resume=resume, writer=writer, progress=progress,
                              on_checkpoint=on_checkpoint)


@contextlib.contextmanager
def _owned(workdir: Path, resume: bool):
    """Holds the workdir's lock (process 0 of a run; see :mod:`mdl_jax._lock`) and checks the
    workdir again as its owner: another run may have started or ended since :func:`prepare`."""
    with workdir_lock(workdir):
        _check_workdir(workdir, resume)
        yield


def _train_methods(config: TrainConfig, workdir: Path, prepared: Prepared, *, resume: bool, writer: bool,
                   progress: bool, on_checkpoint) -> dict[str, Any]:
    """Writes the workdir's files and trains every method of a checked, locked run."""
    if writer:
        _write_json(workdir / "config.json", config.to_json())
        _write_json(workdir / "fingerprint.json", prepared.fingerprint)
    data = data_arrays(prepared.dataset, config.dtype)
    histories: dict[str, History] = {}
    if writer and not resume:
        (workdir / "metrics.jsonl").write_text("")
    runs = []
    for method, sweep in prepared.sweeps.items():
        recorder = Recorder(workdir, method, sweep, config, identity=prepared.fingerprint, writer=writer,
                            progress=progress, on_checkpoint=on_checkpoint)
        try:
            state, histories[method] = _restore(recorder) if resume else (None, recorder.history)
            if resume and writer:  # what the checkpoints hold, without lines written after them
                _atomic_write(workdir / "metrics.jsonl", lambda tmp: tmp.write_text("".join(
                    metric_lines(prepared.sweeps[m], h, range(len(h.rows) + 1 if h.rows else 0))
                    for m, h in histories.items())))
            histories[method] = _train_method(recorder, data, config, state, histories[method])
        finally:
            recorder.close()
        runs += _run_summaries(sweep, histories[method], config.epochs)
    return _summarise(workdir, prepared.dataset, runs, writer)
