"""``mdl-jax`` command line: ``mdl-jax train [--config FILE] [--set key=value ...]``, ``mdl-jax methods``,
``mdl-jax plot WORKDIR``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mdl_jax._config import (
    ConfigError, ModesAboveRankWarning, import_modules, make_config, parse_overrides, read_config_file,
)
from mdl_jax._data import DataError
from mdl_jax._lock import WorkdirBusy
from mdl_jax._spec import SpecError


DEFAULT_WORKDIR = Path("runs/latest")


def _config_keys_help() -> str:
    """The config keys with their defaults, for ``mdl-jax train --help``."""
    from mdl_jax._config import TrainConfig

    defaults = TrainConfig().to_json()
    width = max(map(len, defaults))
    return "config keys (default):\n" + "\n".join(f"  {k:<{width}}  {json.dumps(v)}" for k, v in defaults.items())


def _parser() -> argparse.ArgumentParser:
    from mdl_jax import __version__

    parser = argparse.ArgumentParser(prog="mdl-jax", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mdl-jax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train one run or a sweep (methods x seeds x modes x learning rates)",
        description="Train one run or a whole sweep in one compiled program per method. "
        "Settings come from the defaults, then --config, then --set, then the flags.",
        epilog=_config_keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", type=Path, help="JSON or TOML file of config keys")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key; VALUE is JSON when it parses (modes=[10,20]), a comma-separated list "
        "(methods=bp,mdl; modes=10,20) or a string (dataset=fashion_mnist); with --resume only epochs=N",
    )
    train.add_argument("--data-dir", help="folder of MNIST-format IDX files (else $MDL_DATA_DIR, else TFDS)")
    train.add_argument("--workdir", type=Path, help=f"output folder (default: {DEFAULT_WORKDIR})")
    train.add_argument("--resume", type=Path, metavar="WORKDIR", help="continue the sweep in WORKDIR (with its config.json; --data-dir may point at a new copy of the same data, --set epochs=N trains longer)")
    train.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, a line per epoch otherwise)")
    train.add_argument(
        "--cpu-devices", type=int, metavar="N",
        help="split the CPU into N devices and shard the runs over them (results are unchanged up to float "
        "rounding; default: one device per core, 1 to keep one device)",
    )
    train.add_argument(
        "--distributed", action="store_true",
        help="multi-host: call jax.distributed.initialize() first (one process per host; the "
        "coordinator is auto-detected on SLURM/TPU/MPI clusters or given by the flags below)",
    )
    train.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, with --distributed")
    train.add_argument("--num-processes", type=int, help="number of processes, with --distributed")
    train.add_argument("--process-id", type=int, help="index of this process, with --distributed")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    methods = commands.add_parser("methods", help="list the table of methods, one line each")
    methods.add_argument("--imports", action="append", default=[], metavar="MODULE",
                         help="import MODULE first, to list the methods it registers")
    plot = commands.add_parser("plot", help="draw a workdir's test accuracy and loss against epoch (WORKDIR/metrics.png)")
    plot.add_argument("workdir", type=Path, metavar="WORKDIR")
    plot.add_argument("--out", type=Path, help="image file (default: WORKDIR/metrics.png)")
    return parser


def _split_cpu(jax, devices: int | None, *, distributed: bool) -> None:
    """``devices`` CPU devices, or by default one per core: a sweep's runs are sharded over them,
    so each core trains its share instead of XLA spreading every small product over all cores
    (docs/benchmarks.md: 1.2-1.6x for the 25-run sweep on 2 cores; a single run stays on one
    device). The default leaves the CPU as it is in a multi-host run, where the user chose its
    devices (``JAX_NUM_CPU_DEVICES``, ``--xla_force_host_platform_device_count``), and in a
    process whose JAX is already running (``main`` called from Python)."""
    if devices is not None:
        if devices < 1:
            raise SystemExit(f"mdl-jax: error: --cpu-devices must be at least 1, got {devices}")
        jax.config.update("jax_num_cpu_devices", devices)
        return
    chosen = jax.config.jax_num_cpu_devices > 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if distributed or chosen:
        return
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:  # the backends are up: keep their devices
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "methods":
        return _methods(args.imports)
    if args.command == "plot":
        return _plot(args.workdir, args.out)
    import jax

    _split_cpu(jax, args.cpu_devices, distributed=args.distributed)
    if args.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    workdir = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ModesAboveRankWarning)
            config, workdir = _config(args)
        for warning in caught:
            print(f"mdl-jax: warning: {warning.message}", file=sys.stderr)
        if args.print_config:
            print(json.dumps(config.to_json(), indent=2))
            return 0
        from mdl_jax._run import TrainingDiverged, format_table, train_and_evaluate

        summary = train_and_evaluate(config, workdir, resume=args.resume is not None, progress=not args.quiet)
    except (ConfigError, DataError, SpecError, WorkdirBusy) as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mdl-jax: {_interrupted(workdir)}", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"mdl-jax: {err}", file=sys.stderr)
        return 3
    for run in summary["runs"]:
        if run["diverged"]:
            print(f"{run['method']} modes={run['modes']} seed={run['seed']} lr={run['learning_rate']:g} "
                  f"DIVERGED at epoch {run['diverged_epoch']} ({run['divergence_cause']})")
    print(format_table(summary["table"]))
    print(f"results in {workdir} (per run: summary.json)")
    return 0


def _interrupted(workdir: Path | None) -> str:
    """One line for Ctrl-C: how far the run got and the command that continues it."""
    metrics = workdir / "metrics.jsonl" if workdir is not None else None
    if metrics is None or not (workdir / "config.json").is_file():
        return "interrupted before training started; nothing was written"
    last = None
    for line in reversed(metrics.read_text().splitlines() if metrics.is_file() else []):
        try:  # the last line may be cut short by the interrupt
            last = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    where = f"at epoch {last['epoch']} of {last['method']}" if last else "before the first epoch"
    return f"interrupted {where}; continue with: mdl-jax train --resume {workdir}"


def _methods(imports: Sequence[str]) -> int:
    """Prints the table of methods, one line each (after importing ``imports``)."""
    try:
        import_modules(imports)
    except ConfigError as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
    from mdl_jax._methods import METHODS

    width = max(map(len, METHODS))
    for name, method in METHODS.items():
        kind = "modes" if method.has_modes else "plain"
        print(f"{name:<{width}}  {kind:<5}  {method.description}")
    return 0


def _plot(workdir: Path, out: Path | None) -> int:
    from mdl_jax._plot import plot_workdir

    try:
        path = plot_workdir(workdir, out)
    except FileNotFoundError as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _config(args):
    """The resolved config and workdir: a new run's from defaults, --config, --set and flags;
    a resumed run's from its config.json, where only --data-dir and --set epochs=N may change."""
    if args.resume is not None:
        if args.config is not None or args.workdir is not None:
            raise ConfigError(
                f"--resume continues the sweep in {args.resume} with its saved config.json; drop "
                f"{'--config' if args.config is not None else '--workdir'} (the workdir is the one given to --resume)"
            )
        overrides = parse_overrides(args.overrides)
        if set(overrides) - {"epochs"}:
            raise ConfigError(
                f"--resume accepts only --set epochs=N (to train longer); got --set {', '.join(sorted(set(overrides) - {'epochs'}))}: "
                "other settings fix the runs, so train them in a new --workdir"
            )
        if not (args.resume / "config.json").is_file():
            what = "does not exist" if not args.resume.exists() else "holds no config.json"
            raise ConfigError(f"no run to resume in {args.resume}: it {what}")
        values = read_config_file(args.resume / "config.json") | overrides
        if args.data_dir is not None:
            values["data_dir"] = args.data_dir
        return _resolved_data_dir(make_config(values)), args.resume
    values = read_config_file(args.config) if args.config else {}
    overrides = parse_overrides(args.overrides)
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return _resolved_data_dir(make_config(overrides, base=make_config(values))), args.workdir or DEFAULT_WORKDIR


def _resolved_data_dir(config):
    """``config`` with a relative ``data_dir`` made absolute, so the stored config.json still
    finds the data when the run is resumed from another folder."""
    if config.data_dir is None or os.path.isabs(config.data_dir):
        return config
    return dataclasses.replace(config, data_dir=os.path.abspath(config.data_dir))


if __name__ == "__main__":
    sys.exit(main())
