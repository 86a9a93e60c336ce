"""``mdl-jax`` command line: ``mdl-jax train [--config FILE] [--set key=value ...]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mdl_jax._config import ConfigError, ModesAboveRankWarning, make_config, parse_override, read_config_file
from mdl_jax._data import DataError
from mdl_jax._spec import SpecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdl-jax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train one run or a sweep (methods x seeds x modes x learning rates)",
        description="Train one run or a whole sweep in one compiled program per method. "
        "Settings come from the defaults, then --config, then --set, then the flags.",
    )
    train.add_argument("--config", type=Path, help="JSON or TOML file of config keys")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key; VALUE is JSON when it parses (e.g. modes=[10,20,30])",
    )
    train.add_argument("--data-dir", help="folder of MNIST-format IDX files (else $MDL_DATA_DIR, else TFDS)")
    train.add_argument("--workdir", type=Path, default=Path("runs/latest"), help="output folder")
    train.add_argument("--resume", type=Path, metavar="WORKDIR", help="continue the sweep in WORKDIR (with its config.json; --data-dir may point at a new copy of the same data)")
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
    import jax

    _split_cpu(jax, args.cpu_devices, distributed=args.distributed)
    if args.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
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
    except (ConfigError, DataError, SpecError) as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
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


def _config(args):
    """The resolved config and workdir: a new run's from defaults, --config, --set and flags;
    a resumed run's from its config.json, where only --data-dir may change."""
    if args.resume is not None:
        if args.config is not None or args.overrides:
            raise ConfigError(
                "--resume continues a sweep with its saved config.json; drop --config and --set "
                "(to train longer, raise 'epochs' in config.json: the one change --resume accepts)"
            )
        if not (args.resume / "config.json").is_file():
            what = "does not exist" if not args.resume.exists() else "holds no config.json"
            raise ConfigError(f"no run to resume in {args.resume}: it {what}")
        values = read_config_file(args.resume / "config.json")
        if args.data_dir is not None:
            values["data_dir"] = args.data_dir
        return make_config(values), args.resume
    values = read_config_file(args.config) if args.config else {}
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return make_config(overrides, base=make_config(values)), args.workdir


if __name__ == "__main__":
    sys.exit(main())
