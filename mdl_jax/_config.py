"""Run configurations: a frozen dataclass read from JSON or TOML, plus ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import importlib
import difflib
import json
import os
import sys
import tomllib
import typing
import warnings
from pathlib import Path
from typing import Any

from mdl_jax._data import DATASETS
from mdl_jax._methods import METHODS, make_spec
from mdl_jax._models import param_count
from mdl_jax._spec import SpecError, full_ranks
from mdl_jax._train import OPTIMIZERS, Recipe, check_pruning

_RECIPE = Recipe._field_defaults  # one source for the training defaults


_PER_LAYER = int | tuple[int, ...]


class ConfigError(ValueError):
    """A configuration that names an unknown key or holds a value of the wrong type."""


class ModesAboveRankWarning(UserWarning):
    """A mode count above every layer's full rank: legal (the letter's Fig. 1 uses p = 3 in a
    2-3-1 network) but more parameters than the weights they stand for."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training sweep needs; the grid is methods x seeds x modes x learning_rates.

    Attributes:
      description: free text: what the config is for, its command, run time, expected numbers.
      dataset: ``mnist``, ``fashion_mnist``, ... (read from ``data_dir`` when given, else TFDS),
        or ``gaussian_mixture`` (the letter's Eq. 2).
      data_dir: folder of MNIST-format IDX files; ``None`` falls back to ``$MDL_DATA_DIR``,
        then to TFDS.
      widths: layer widths ``N_0 .. N_L``.
      methods: any of ``mdl``, ``mdl_1l1p``, ``two_factor``, ``bp``, ``svd``.
      modes: mode counts to sweep (one per run; an int is the same p in every layer, a list
        gives one per mode layer, e.g. ``[[10, 25, 250]]``; ignored by ``bp``).
        An empty list gives ``svd`` its full rank.
      seeds: integer seeds; runs of one seed share their data order.
      learning_rates: initial learning rates.
      epochs: epochs to train.
      batch_size: minibatch size.
      lr_halving_epochs: the learning rate halves every this many epochs.
      weight_decay: decoupled weight decay (AdamW).
      svd_orthogonality: weight of the SVD orthogonality penalty.
      svd_sparsity: weight of the SVD sparsity penalty.
      dtype: ``float32`` or ``float64`` (the latter needs ``JAX_ENABLE_X64=1``).
      loss: ``cross_entropy`` or ``mse`` (one output: targets +-1, as in the letter's Fig. 1).
      checkpoint_every: write a checkpoint every this many epochs (0: only after the last epoch).
      checkpoint_keep: how many of the latest checkpoints to keep.
      imports: Python modules imported before anything else, to register methods of your own
        (e.g. Flax models through ``mdl_jax.nn.flax_method``); stored with the run, so that
        ``--resume`` finds them again.
      max_runs_per_chunk: at most this many runs on the devices at once; larger sweeps are
        trained chunk by chunk (``None``: estimated from each run's memory).
      max_padding: train runs whose mode counts differ as several programs, so that padded
        modes are at most this share of the executed FLOPs (``None``: one program padded to
        the largest counts). Same numbers either way; pays where FLOPs are the cost (a GPU).
      prune_every: prune the weakest modes by tau after every this many epochs (0: never).
      prune_tau: thresholds to sweep: each pruning masks, per mode layer, the weakest modes
        whose cumulative share of the layer's tau is below it (0: none).
      min_modes: pruning leaves at least this many modes per mode layer.
      prune_until: the last epoch after which pruning may happen (``None``: every due epoch);
        the epochs after it fine-tune at the final masks.
      optimizer: ``adamw`` (the letter's) or ``sgd`` (plain SGD, no momentum).
      validation: hold out the last this many training examples as a validation set (0:
        none); ``metrics.jsonl`` then has ``val_loss`` and ``val_accuracy`` every epoch, and
        ``summary.json`` each run's ``best_val_epoch`` and ``test_accuracy_at_best_val``.
    """

    description: str = ""
    dataset: str = "mnist"
    data_dir: str | None = None
    widths: tuple[int, ...] = (784, 100, 100, 10)
    methods: tuple[str, ...] = ("mdl",)
    modes: tuple[int | tuple[int, ...], ...] = (30,)
    seeds: tuple[int, ...] = (0,)
    learning_rates: tuple[float, ...] = (3e-3,)
    epochs: int = 20
    batch_size: int = _RECIPE["batch_size"]
    lr_halving_epochs: int = _RECIPE["lr_halving_epochs"]
    weight_decay: float = _RECIPE["weight_decay"]
    svd_orthogonality: float = _RECIPE["svd_orthogonality"]
    svd_sparsity: float = _RECIPE["svd_sparsity"]
    dtype: str = _RECIPE["dtype"]
    loss: str = _RECIPE["loss"]
    checkpoint_every: int = 1
    checkpoint_keep: int = 2
    max_runs_per_chunk: int | None = None
    max_padding: float | None = None
    prune_every: int = _RECIPE["prune_every"]
    prune_tau: tuple[float, ...] = (0.0,)
    min_modes: int = _RECIPE["min_modes"]
    prune_until: int | None = _RECIPE["prune_until"]
    optimizer: str = _RECIPE["optimizer"]
    validation: int = 0
    imports: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        listed = lambda v: [listed(i) for i in v] if isinstance(v, tuple) else v
        return {k: listed(v) for k, v in dataclasses.asdict(self).items()}

    def identity(self) -> dict[str, Any]:
        """The settings that fix what the runs compute (see :data:`IDENTITY_KEYS`)."""
        values = self.to_json()
        return {key: values[key] for key in IDENTITY_KEYS}


#: Keys that fix the runs of a workdir: ``--resume`` refuses a config.json whose values differ
#: from those its checkpoints were trained with. The others (``description``, ``data_dir``,
#: ``epochs`` (which may grow), checkpoint and chunking settings) may change between runs.
IDENTITY_KEYS = (
    "dataset", "widths", "methods", "modes", "seeds", "learning_rates", "batch_size", "lr_halving_epochs",
    "weight_decay", "svd_orthogonality", "svd_sparsity", "dtype", "loss", "prune_every", "prune_tau", "min_modes",
    "prune_until", "optimizer", "validation",
)


def _unknown_key(key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known keys: {', '.join(known)}")


def _coerce(key: str, value: Any, kind) -> Any:
    """Checks and converts ``value`` to the type ``kind`` of field ``key``; a scalar given for
    a tuple field becomes a 1-tuple."""
    origin = typing.get_origin(kind)

    def scalar(v, t):
        if t == _PER_LAYER:  # a mode count: one int for every layer, or a list with one per layer
            if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
                return tuple(v)
            return scalar(v, int)
        if typing.get_origin(t) is tuple:  # e.g. a list of pairs
            return _coerce(key, v, t)
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if not isinstance(v, t) or isinstance(v, bool) and t is not bool:
            raise ConfigError(f"config key {key!r} needs {t.__name__} values, got {v!r}")
        return v

    if origin is tuple:
        item = typing.get_args(kind)[0]
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(scalar(v, item) for v in values)
    if value is None and type(None) in typing.get_args(kind):
        return None
    base = next((t for t in (typing.get_args(kind) or (kind,)) if t is not type(None)), kind)
    return scalar(value, base)


def update_config(config, values: dict[str, Any] | None = None):
    """A copy of the frozen dataclass ``config`` with ``values`` checked and applied.

    The one way every config of the project (``TrainConfig`` and each figure's) takes
    overrides: an unknown key is refused with the closest known one, a value of the wrong type
    is refused naming the key, a scalar given for a list field becomes a one-element list.
    """
    kinds = typing.get_type_hints(type(config))
    updates = {}
    for key, value in (values or {}).items():
        if key not in kinds:
            raise _unknown_key(key, list(kinds))
        updates[key] = _coerce(key, value, kinds[key])
    return dataclasses.replace(config, **updates)


def parse_overrides(texts) -> dict[str, Any]:
    """``["key=value", ...]`` from a command line as a dict (see :func:`parse_override`)."""
    return dict(parse_override(text) for text in texts)


def make_config(values: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from ``base`` (default: the defaults) updated with ``values``.

    Raises:
      ConfigError: an unknown key (with the closest known one), a value of the wrong type, or
        a setting that cannot work (unknown method, epochs < 1, ...).
    """
    config = update_config(base or TrainConfig(), values)
    import_modules(config.imports)
    for method in config.methods:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r} in 'methods'; choose from {', '.join(METHODS)}")
    if config.dataset not in DATASETS:
        close = difflib.get_close_matches(config.dataset, DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown dataset {config.dataset!r}{hint}; choose one of {', '.join(DATASETS)} "
            "('idx' names any other folder of MNIST-format IDX files, given by data_dir)"
        )
    if config.dataset == "idx" and not config.data_dir:
        raise ConfigError("dataset 'idx' reads a folder of MNIST-format IDX files: give it with data_dir / --data-dir")
    if len(set(config.methods)) < len(config.methods):
        raise ConfigError(f"'methods' names a method twice: {list(config.methods)}")
    _check_architectures(config)
    for method in config.methods:
        try:
            check_pruning(method, config.prune_tau, config.prune_every, config.min_modes)
        except SpecError as err:
            raise ConfigError(f"'prune_every'/'prune_tau'/'min_modes': {err}") from None
    if config.prune_until is not None and config.prune_until < 1:
        raise ConfigError(f"'prune_until' must be >= 1 or null, got {config.prune_until}")
    if config.max_runs_per_chunk is not None and config.max_runs_per_chunk < 1:
        raise ConfigError(f"'max_runs_per_chunk' must be >= 1 or null, got {config.max_runs_per_chunk}")
    if config.max_padding is not None and not 0 <= config.max_padding < 1:
        raise ConfigError(f"'max_padding' must be in [0, 1) or null, got {config.max_padding}: 0.1 allows 10 % padded FLOPs")
    for key in ("epochs", "batch_size", "lr_halving_epochs", "checkpoint_keep"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key!r} must be >= 1, got {getattr(config, key)}")
    if not config.seeds or not config.methods or not config.learning_rates:
        raise ConfigError("'methods', 'seeds' and 'learning_rates' each need at least one value")
    if config.loss not in ("cross_entropy", "mse"):
        raise ConfigError(f"'loss' must be cross_entropy or mse, got {config.loss!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"'optimizer' must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.validation < 0:
        raise ConfigError(f"'validation' is a number of held-out training examples, >= 0, got {config.validation}")
    if config.dtype not in ("float32", "float64"):
        raise ConfigError(f"'dtype' must be float32 or float64, got {config.dtype!r}")
    return config


def import_modules(modules) -> None:
    """Imports the modules of ``imports`` (which register methods), looking in the working
    directory first, as ``python -m`` does: ``imports=experiments.models`` works from the
    repository root without installing ``experiments``."""
    cwd = os.getcwd()
    if modules and cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"'imports': cannot import {module!r} ({err}); run from the folder that holds it, or put "
                "that folder on PYTHONPATH"
            ) from None


def _check_architectures(config: TrainConfig) -> None:
    """Every (method, mode count) of the grid must make a network: bad widths, a mode count
    above every layer's rank, ... are caught here, before anything runs."""
    ranks = full_ranks(config.widths)
    for method in config.methods:
        if METHODS[method].has_modes and not sweep_modes(config, method):
            raise ConfigError(f"method {method!r} needs at least one mode count in 'modes'")
        for p in sweep_modes(config, method):
            try:
                spec = make_spec(config.widths, p, method)
            except SpecError as err:
                raise ConfigError(f"'widths'/'modes': {err}") from None
            if spec.modes and max(spec.modes) > max(ranks):
                plain = param_count(make_spec(config.widths, None, "bp"))
                warnings.warn(ModesAboveRankWarning(
                    f"{method} with p = {max(spec.modes)} modes exceeds the full rank of every layer of widths "
                    f"{list(config.widths)} (largest min(N_l, N_l+1): {max(ranks)}): {param_count(spec)} trainable "
                    f"parameters against {plain} plain weights; p <= {max(ranks)} spans the same weights"
                ), stacklevel=3)


def _capped(widths, p: int | tuple[int, ...]) -> list[int]:
    """``p`` modes in every layer (or ``p[l]`` in layer ``l``), capped at each layer's full rank
    (for ``rank_by_default`` methods)."""
    per_layer = p if isinstance(p, tuple) else (p,) * (len(widths) - 1)
    return [min(q, a, b) for q, a, b in zip(per_layer, widths[:-1], widths[1:])]


def sweep_modes(config: TrainConfig, method: str) -> list:
    """The mode counts a method's sweep runs: ``[None]`` for a plain method (or a full-rank
    default), per-layer counts capped at the rank for ``rank_by_default`` methods."""
    entry = METHODS[method]
    if not entry.has_modes or (entry.rank_by_default and not config.modes):
        return [None]
    if entry.rank_by_default:  # counts that cap to the same ranks are one run, not two
        return list(dict.fromkeys(tuple(_capped(config.widths, p)) for p in config.modes))
    return list(config.modes)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a ``.json`` or ``.toml`` config file into a plain dict (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"config file {path}: unsupported format {path.suffix or '(no suffix)'!r}; write it as .json or .toml")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {err}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value``, with ``value`` read as JSON when it parses (``modes=[10,20]``, ``epochs=5``),
    as a list when it holds commas (``methods=bp,mdl``, ``modes=10,20``: each item JSON or a
    string), else as a string (``dataset=fashion_mnist``).

    Raises:
      ConfigError: no ``=``, or a value that starts like JSON (``[``, ``{``, ``"``) and does not parse.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value, e.g. epochs=5 or modes=10,20")
    raw = raw.strip()
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError as err:
        if raw[:1] in ("[", "{", '"'):
            raise ConfigError(
                f"could not parse the value of --set {text!r} as JSON ({err.msg} at character {err.pos}); "
                "write e.g. modes=[10,20] or modes=10,20"
            ) from None
    if "," in raw:
        return key.strip(), [_scalar(item.strip()) for item in raw.split(",") if item.strip()]
    return key.strip(), raw


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
