"""Shared plumbing of the figure scripts: data, sweeps, and writing figures and results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import mdl_jax
from mdl_jax._lock import holds_only_lock


def parser(doc: str, example: str = "seeds=2") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small settings that still draw every panel")
    p.add_argument("--out", type=Path, required=False, help="output folder (the figure run's workdir)")
    p.add_argument("--resume", action="store_true", help="continue a killed figure run in --out (finished grids are not retrained)")
    p.add_argument("--data-dir", default=os.environ.get(mdl_jax.DATA_DIR_ENV), help="MNIST IDX folder (else TFDS)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a setting of the figure (VALUE as JSON), e.g. --set {example}; the settings and their "
                   "defaults: experiments/configs/")
    return p


def settings_from(args, full, quick):
    """The full or quick settings with the command line's ``--set`` overrides applied (the
    same checks as ``mdl-jax train``: an unknown key is named with the closest known one)."""
    try:
        return mdl_jax.update_config(quick if args.quick else full, mdl_jax.parse_overrides(args.overrides))
    except mdl_jax.ConfigError as err:
        raise SystemExit(f"error: {err}") from None


def _stored_settings(settings) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def check_figure_run(out: Path, settings, *, resume: bool) -> None:
    """Refuses an ``out`` that cannot hold this figure run (writes nothing).

    A new or empty ``out`` is fine. A finished run (``results.json``) is redrawn without
    training; an unfinished one continues only with ``--resume``; both must have been started
    with the same settings.
    """
    stored_path = out / "config.json"
    if out.exists() and not out.is_dir():
        raise mdl_jax.ConfigError(f"{out} is a file, not a folder: choose another --out")
    if stored_path.is_file():
        stored, current = json.loads(stored_path.read_text()), _stored_settings(settings)
        changed = [f"{k!r} ({stored.get(k)!r} -> {current.get(k)!r})" for k in sorted(set(stored) | set(current))
                   if stored.get(k) != current.get(k)]
        if changed:
            raise mdl_jax.ConfigError(f"{out} holds a figure run with other settings: {', '.join(changed)}; choose another --out")
        if not resume and not (out / "results.json").is_file():
            raise mdl_jax.ConfigError(f"{out} holds an unfinished figure run: pass --resume to continue it")
    elif out.exists() and not holds_only_lock(out):
        raise mdl_jax.ConfigError(f"{out} is not empty and holds no figure run: choose another --out")


def open_figure_run(out: Path, settings) -> None:
    """Writes ``out/config.json`` for a checked new run (see :func:`check_figure_run`)."""
    if not (out / "config.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(_stored_settings(settings), indent=2) + "\n")


def main(doc: str, run, full, quick, name: str, *, mnist: bool = True, argv=None) -> dict:
    """Parses the command line, checks the settings and the data, then runs the figure in its
    workdir (locked for the run: one process at a time) and says where it went. Nothing is
    written before every check has passed; Ctrl-C leaves one line saying how to continue."""
    fields = dataclasses.asdict(full)
    example = "seeds=2" if "seeds" in fields else f"{next(iter(fields))}={json.dumps(next(iter(fields.values())))}"
    args = parser(doc, example).parse_args(argv)  # the --help example is one of the figure's own keys
    settings = settings_from(args, full, quick)
    out = args.out or Path("runs") / name
    data = None
    try:
        if mnist:
            data = mdl_jax.load_dataset("mnist", args.data_dir)
            _check_mnist(data, name)
        check_figure_run(out, settings, resume=args.resume)
        with mdl_jax.workdir_lock(out):
            check_figure_run(out, settings, resume=args.resume)  # again, as the workdir's owner
            open_figure_run(out, settings)
            results = run(settings, data, out) if mnist else run(settings, out)
    except (mdl_jax.DataError, mdl_jax.SpecError, mdl_jax.ConfigError, mdl_jax.WorkdirBusy) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        command = f"python -m experiments.{name} {'--quick ' if args.quick else ''}--out {out} --resume"
        raise SystemExit(f"interrupted; finished parts are kept in {out}; continue with: {command}") from None
    print(f"wrote {out}/{name}.png, .pdf, results.json in {results['wall_time_s']:.0f} s")
    return results


def _check_mnist(data: mdl_jax.Dataset, name: str) -> None:
    """The MNIST figures train 784-...-10 networks: refuse other data before anything runs."""
    features, classes = data.train_images.shape[1], int(max(data.train_labels.max(), data.test_labels.max())) + 1
    if features != 784 or classes != 10:
        raise mdl_jax.DataError(
            f"{name} trains 784-...-10 networks on MNIST, but the data have {features} features and {classes} "
            "classes: point --data-dir at a folder of the four MNIST IDX files"
        )


class Grid(NamedTuple):
    """One trained grid, read back from its workdir's files."""

    params: dict  # final parameters, leading run axis (inactive modes are zeros)
    spec: mdl_jax.NetworkSpec  # the padded architecture
    runs: list[dict]  # per run: method, modes, seed, learning_rate, param_count
    test_accuracy: np.ndarray  # (epochs, runs), after each epoch
    test_loss: np.ndarray  # (epochs, runs)
    wall_time_s: float  # of the grid's training program(s)

    def final(self, last_epochs: int = 1) -> np.ndarray:
        """Each run's test accuracy, mean of its last ``last_epochs`` epochs: ``(runs,)``."""
        return self.test_accuracy[-last_epochs:].mean(0)


def train_grid(out: Path, grid: str, data, widths, method, *, modes=(None,), seeds, lr, epochs, **recipe) -> Grid:
    """Trains one method's grid as the runs of ``out/runs/<grid>`` (continuing them if they
    are there; a finished grid is not retrained) and reads it back from the files."""
    workdir = Path(out) / "runs" / grid
    values = {"dataset": "gaussian_mixture" if data.name == "gaussian_mixture" else "mnist", "widths": list(widths),
              "methods": [method], "seeds": list(seeds), "learning_rates": [lr], "epochs": epochs, **recipe}
    if any(p is not None for p in modes):
        values["modes"] = list(modes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mdl_jax.ModesAboveRankWarning)  # e.g. Fig. 1's p = 3 in a 2-3-1 network
        config = mdl_jax.make_config(values)
    resume = (workdir / "config.json").is_file()
    mdl_jax.train_and_evaluate(config, workdir, resume=resume, dataset=data)
    saved = mdl_jax.load_params(workdir, method)
    metric = lambda field: mdl_jax.load_metrics(workdir, method, field)[1:]
    wall = json.loads((workdir / "summary.json").read_text())["runs"][0]["wall_time_s"]
    return Grid(saved.params, saved.spec, saved.runs, metric("test_accuracy"), metric("test_loss"), wall)


def by_modes(grid: Grid, values: np.ndarray) -> dict[int, np.ndarray]:
    """Groups a per-run array by the runs' (first-layer) mode count: ``{p: (seeds, ...)}``."""
    groups: dict[int, list] = {}
    for run, info in enumerate(grid.runs):
        groups.setdefault(info["modes"][0] if info["modes"] else 0, []).append(values[run])
    return {p: np.asarray(v) for p, v in sorted(groups.items())}


def spread(values, axis: int = 0) -> dict[str, np.ndarray]:
    """``{"mean", "std"}`` of ``values`` over ``axis`` (runs or seeds)."""
    return {"mean": np.mean(values, axis), "std": np.std(values, axis)}


def errorbar(ax, x, spread: dict, **kw):
    """``ax.errorbar`` of a :func:`spread` (as read back from results.json) against ``x``."""
    return ax.errorbar(x, np.asarray(spread["mean"]), **{"yerr": np.asarray(spread["std"]), "marker": "o", "capsize": 2, **kw})


def stacked(spreads) -> dict[str, list]:
    """A list of :func:`spread` dicts as one: ``{"mean": [...], "std": [...]}`` (for :func:`errorbar`)."""
    spreads = list(spreads)
    return {k: [s[k] for s in spreads] for k in ("mean", "std")}


def band(ax, x, spread: dict, **kw):
    """The mean of a :func:`spread` against ``x`` as a line, with a band of one standard deviation."""
    mean, std = np.asarray(spread["mean"]), np.asarray(spread["std"])
    line = ax.plot(x, mean, **kw)[0]
    ax.fill_between(x, mean - std, mean + std, alpha=0.25, color=line.get_color())
    return line


def label_axes(axes, panels, *, fontsize: int = 7) -> None:
    """Gives each axis its ``(title, xlabel, ylabel)`` and a legend when it has labelled artists."""
    for ax, (title, x, y) in zip(axes, panels):
        ax.set(title=title, xlabel=x, ylabel=y)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=fontsize)


def cached(path: Path, recipe: dict, compute) -> dict[str, np.ndarray]:
    """The arrays that an earlier run stored at ``path`` with the same ``recipe`` (a JSON-able
    dict of the settings they depend on), else ``compute()``'s (a dict of arrays), stored."""
    text = json.dumps(recipe)
    if path.exists():
        with np.load(path) as stored:
            if "recipe" in stored and str(stored["recipe"]) == text:
                print(f"reusing {path}", flush=True)
                return {k: stored[k] for k in stored.files if k != "recipe"}
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, recipe=text, **arrays)
    return arrays


def save(out: Path, name: str, results: dict, settings, figure=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").is_file():
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    if figure is not None:
        figure.savefig(out / f"{name}.png", dpi=150)
        figure.savefig(out / f"{name}.pdf")
        pyplot().close(figure)
    tmp = out / "results.json.tmp"  # written last and atomically: its presence marks a finished run
    tmp.write_text(json.dumps(results, indent=2, default=_to_json) + "\n")
    os.replace(tmp, out / "results.json")


def _to_json(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value)} as JSON")


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The default device's float32 GFLOP/s on an ``n x n`` matrix product (best of ``repeats``)."""
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def machine() -> dict:
    """What the numbers were measured on: ``name`` (the CPU model and core count, or the
    accelerator), ``cpus``, ``device``."""
    device, cpus = jax.devices()[0], os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = f"{cpu}, {cpus} cores" if device.platform == "cpu" else f"{device.device_kind} ({cpu}, {cpus} cores)"
    return {"name": name, "cpus": cpus, "device": device.device_kind}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
