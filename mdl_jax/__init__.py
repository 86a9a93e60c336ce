"""mdl-jax: mode decomposition learning (Li & Huang, Phys. Rev. Research 5, L022011, 2023) in JAX."""

from mdl_jax._data import (
    DATA_DIR_ENV as DATA_DIR_ENV,
    DataError as DataError,
    Dataset as Dataset,
    gaussian_mixture as gaussian_mixture,
    gaussian_mixture_dataset as gaussian_mixture_dataset,
    hold_out as hold_out,
    load_dataset as load_dataset,
    load_idx_folder as load_idx_folder,
    load_tfds as load_tfds,
    read_idx as read_idx,
)
from mdl_jax._methods import (
    METHODS as METHODS,
    Method as Method,
    ModeLayer as ModeLayer,
    get_method as get_method,
    init_scale as init_scale,
    make_spec as make_spec,
    full_mask as full_mask,
    mode_mask as mode_mask,
    with_layer_mask as with_layer_mask,
    register_method as register_method,
    unregister_method as unregister_method,
    zero_inactive_modes as zero_inactive_modes,
)
from mdl_jax._models import (
    apply as apply,
    Flops as Flops,
    check_params as check_params,
    effective_weights as effective_weights,
    init_params as init_params,
    matmul_flops as matmul_flops,
    mode_layers as mode_layers,
    mode_map as mode_map,
    param_count as param_count,
    penalty as penalty,
)
from mdl_jax._spec import (
    NetworkSpec as NetworkSpec,
    SpecError as SpecError,
    full_ranks as full_ranks,
)
from mdl_jax._config import (
    ConfigError as ConfigError,
    ModesAboveRankWarning as ModesAboveRankWarning,
    TrainConfig as TrainConfig,
    make_config as make_config,
    parse_overrides as parse_overrides,
    update_config as update_config,
)
from mdl_jax._lock import (
    WorkdirBusy as WorkdirBusy,
    workdir_lock as workdir_lock,
)
from mdl_jax._plot import plot_workdir as plot_workdir
from mdl_jax._run import (
    SavedRuns as SavedRuns,
    aggregate as aggregate,
    load_metrics as load_metrics,
    load_params as load_params,
    TrainingDiverged as TrainingDiverged,
    train_and_evaluate as train_and_evaluate,
)
from mdl_jax._train import (
    DataArrays as DataArrays,
    EpochMetrics as EpochMetrics,
    Recipe as Recipe,
    RunHparams as RunHparams,
    RunInfo as RunInfo,
    StepMemory as StepMemory,
    Sweep as Sweep,
    TrainResult as TrainResult,
    TrainState as TrainState,
    build_sweep as build_sweep,
    step_memory as step_memory,
    data_arrays as data_arrays,
    correct_count as correct_count,
    evaluate as evaluate,
    init_state as init_state,
    select_run as select_run,
    train as train,
    train_epoch as train_epoch,
    per_example_loss as per_example_loss,
    DIVERGENCE_CAUSES as DIVERGENCE_CAUSES,
    run_footprint_bytes as run_footprint_bytes,
)

from mdl_jax import analysis as analysis
from mdl_jax import binary as binary
from mdl_jax import landscape as landscape
from mdl_jax import nn as nn

__version__ = "0.1.0"


def __getattr__(name: str):
    """``mdl_jax.online`` on first use: it loads Diffrax (half a second), which a training run never needs."""
    if name == "online":
        import importlib

        return importlib.import_module("mdl_jax.online")
    raise AttributeError(f"module 'mdl_jax' has no attribute {name!r}")
