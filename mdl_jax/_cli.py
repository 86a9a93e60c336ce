"""``mdl-jax`` command line: ``mdl-jax train [--config FILE] [--set key=value ...]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mdl_jax._config import ConfigError, make_config, parse_override, read_config_file
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
    train.add_argument("--resume", type=Path, metavar="WORKDIR", help="continue the sweep in WORKDIR")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--cpu-devices", type=int, metavar="N",
        help="split the CPU into N devices and shard the runs over them (results are unchanged)",
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import jax

    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    if args.distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    try:
        if args.resume is not None:
            if args.config is not None or args.overrides:
                raise ConfigError("--resume continues a sweep with its saved config.json; drop --config and --set")
            config = make_config(read_config_file(args.resume / "config.json"))
            workdir = args.resume
        else:
            values = read_config_file(args.config) if args.config else {}
            overrides = dict(parse_override(o) for o in args.overrides)
            if args.data_dir is not None:
                overrides["data_dir"] = args.data_dir
            config = make_config(overrides, base=make_config(values))
            workdir = args.workdir
        if args.print_config:
            print(json.dumps(config.to_json(), indent=2))
            return 0
        from mdl_jax._run import TrainingDiverged, train_and_evaluate

        summary = train_and_evaluate(config, workdir, resume=args.resume is not None, progress=not args.quiet)
    except (ConfigError, DataError, SpecError) as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"mdl-jax: {err}", file=sys.stderr)
        return 3
    for run in summary["runs"]:
        print(
            f"{run['method']:<10} modes={run['modes']} seed={run['seed']} lr={run['learning_rate']:g} "
            f"test_acc={run['final_test_accuracy']:.4f} params={run['param_count']}"
            + (f" DIVERGED at epoch {run['diverged_epoch']} ({run['divergence_cause']})" if run["diverged"] else "")
        )
    print(f"results in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
