"""mdl-jax: mode decomposition learning (Li & Huang, Phys. Rev. Research 5, L022011, 2023) in JAX."""

from mdl_jax._data import (
    DATA_DIR_ENV as DATA_DIR_ENV,
    DataError as DataError,
    Dataset as Dataset,
    gaussian_mixture as gaussian_mixture,
    gaussian_mixture_dataset as gaussian_mixture_dataset,
    load_dataset as load_dataset,
    load_idx_folder as load_idx_folder,
    load_tfds as load_tfds,
    read_idx as read_idx,
)
from mdl_jax._models import (
    ModeLayer as ModeLayer,
    apply as apply,
    check_params as check_params,
    effective_weights as effective_weights,
    init_params as init_params,
    init_scale as init_scale,
    mode_layers as mode_layers,
    param_count as param_count,
    penalty as penalty,
)
from mdl_jax._spec import (
    METHODS as METHODS,
    MODE_METHODS as MODE_METHODS,
    NetworkSpec as NetworkSpec,
    SpecError as SpecError,
    make_spec as make_spec,
)
from mdl_jax._config import (
    ConfigError as ConfigError,
    TrainConfig as TrainConfig,
    make_config as make_config,
)
from mdl_jax._run import (
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
    Sweep as Sweep,
    TrainResult as TrainResult,
    TrainState as TrainState,
    build_sweep as build_sweep,
    data_arrays as data_arrays,
    evaluate as evaluate,
    init_state as init_state,
    mode_mask as mode_mask,
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
from mdl_jax import online as online

__version__ = "0.1.0"
