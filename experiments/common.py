"""Shared plumbing of the figure scripts: data, sweeps, and writing figures and results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np

import mdl_jax


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small settings that still draw every panel")
    p.add_argument("--out", type=Path, required=False, help="output folder")
    p.add_argument("--data-dir", default=os.environ.get(mdl_jax.DATA_DIR_ENV), help="MNIST IDX folder (else TFDS)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the figure (VALUE as JSON), e.g. --set epochs=20")
    return p


def settings_from(args, full, quick):
    """The full or quick settings with the command line's ``--set`` overrides applied."""
    settings = quick if args.quick else full
    updates = {}
    names = {f.name: f for f in dataclasses.fields(settings)}
    for text in args.overrides:
        key, value = mdl_jax._config.parse_override(text)
        if key not in names:
            raise SystemExit(f"unknown setting {key!r}; known: {', '.join(names)}")
        updates[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(settings, **updates)


def main(doc: str, run, full, quick, name: str, *, mnist: bool = True, argv=None) -> dict:
    """Parses the command line, runs the figure and says where it went."""
    args = parser(doc).parse_args(argv)
    settings = settings_from(args, full, quick)
    out = args.out or Path("runs") / name
    results = run(settings, mdl_jax.load_dataset("mnist", args.data_dir), out) if mnist else run(settings, out)
    print(f"wrote {out}/{name}.png, .pdf, results.json in {results['wall_time_s']:.0f} s")
    return results


def train_grid(data, widths, method, *, modes=(None,), seeds, lr, epochs, **recipe):
    """Trains one method's grid as one program; returns ``(sweep, result)``."""
    sweep = mdl_jax.build_sweep(widths, method, modes=list(modes), seeds=seeds, learning_rates=[lr], **recipe)
    return sweep, mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=epochs)


def by_modes(sweep, values: np.ndarray) -> dict[int, np.ndarray]:
    """Groups a per-run array by the runs' (first-layer) mode count: ``{p: (seeds, ...)}``."""
    groups: dict[int, list] = {}
    for run, info in enumerate(sweep.infos):
        groups.setdefault(info.modes[0] if info.modes else 0, []).append(values[run])
    return {p: np.asarray(v) for p, v in sorted(groups.items())}


def save(out: Path, name: str, results: dict, settings, figure=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_to_json) + "\n")
    if figure is not None:
        figure.savefig(out / f"{name}.png", dpi=150)
        figure.savefig(out / f"{name}.pdf")


def _to_json(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value)} as JSON")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
