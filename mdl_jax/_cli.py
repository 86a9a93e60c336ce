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
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        from mdl_jax._run import train_and_evaluate  # imports JAX: keep --help fast

        summary = train_and_evaluate(config, workdir, resume=args.resume is not None, progress=not args.quiet)
    except (ConfigError, DataError, SpecError) as err:
        print(f"mdl-jax: error: {err}", file=sys.stderr)
        return 2
    for run in summary["runs"]:
        print(
            f"{run['method']:<10} modes={run['modes']} seed={run['seed']} lr={run['learning_rate']:g} "
            f"test_acc={run['final_test_accuracy']:.4f} params={run['param_count']}"
        )
    print(f"results in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
