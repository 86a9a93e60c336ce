"""Training: one epoch is a ``lax.scan`` of AdamW (or SGD) steps; a sweep is that epoch under ``vmap``.

The static half of a program is a :class:`Recipe` (architecture padded to ``p_max``, batch
size, schedule, penalties, dtype). Everything that differs between runs of one sweep is a
traced :class:`RunHparams` (PRNG key, learning rate, mode mask), so one compilation trains a
whole grid of seeds x mode counts x learning rates::

    sweep = build_sweep([784, 100, 100, 10], "mdl", modes=[10, 20, 30], seeds=range(5),
                        learning_rates=[3e-3])
    result = train(sweep.recipe, sweep.runs, dataset, epochs=20)
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdl_jax._data import Dataset
from mdl_jax._layout import Layout, plan_layout, plan_programs, to_devices, to_host
from mdl_jax._methods import get_method, make_spec, mode_mask, zero_inactive_modes
from mdl_jax._models import apply, init_params, param_count, penalty
from mdl_jax._prune import prune_masks, zero_pruned
from mdl_jax._spec import NetworkSpec, SpecError


class Recipe(NamedTuple):
    """Static training settings; fixes every shape of the compiled program.

    Attributes:
      spec: the architecture, with each layer padded to the largest mode count of the sweep.
      batch_size: minibatch size (100 in the letter).
      lr_halving_epochs: the learning rate halves every this many epochs (staircase).
      weight_decay: decoupled weight decay on every trainable array (1e-4).
      svd_orthogonality: weight of the orthogonality penalty (``svd`` only).
      svd_sparsity: weight of the ``||s||_1 / ||s||_2`` penalty (``svd`` only).
      dtype: floating dtype of parameters and computation.
      loss: ``cross_entropy`` (softmax over the outputs) or ``mse`` (``||y - t||^2 / 2`` with
        one-hot targets, or ``t = +-1`` for a single output, as in the letter's Fig. 1).
      prune_every: prune modes after every this many epochs (0: never; see :mod:`mdl_jax._prune`);
        each run's threshold is its traced ``RunHparams.prune_tau``.
      prune_until: no pruning after this epoch (``None``: until the end); the epochs after it
        fine-tune at the final masks.
      min_modes: pruning leaves at least this many modes in every mode layer.
      optimizer: ``adamw`` (the letter's Adam, decoupled weight decay) or ``sgd`` (plain SGD
        without momentum, as DLRT's benchmarks; weight decay there is added to the gradient,
        as ``torch.optim.SGD`` does).
    """

    spec: NetworkSpec
    batch_size: int = 100
    lr_halving_epochs: int = 50
    weight_decay: float = 1e-4
    svd_orthogonality: float = 30.0
    svd_sparsity: float = 1.0
    dtype: str = "float32"
    loss: str = "cross_entropy"
    prune_every: int = 0
    prune_until: int | None = None
    min_modes: int = 1
    optimizer: str = "adamw"


LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("adamw", "sgd")


def per_example_loss(logits: jax.Array, labels: jax.Array, loss: str) -> tuple[jax.Array, jax.Array]:
    """Loss and correctness of each example: ``(loss (...,), correct (...,))``."""
    if loss == "cross_entropy":
        correct = jnp.argmax(logits, -1).astype(labels.dtype) == labels
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels), correct
    if logits.shape[-1] == 1:  # labels {0, 1} as targets -1, +1
        target = (2 * labels - 1).astype(logits.dtype)
        return 0.5 * (logits[..., 0] - target) ** 2, (logits[..., 0] > 0) == (labels > 0)
    target = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.sum((logits - target) ** 2, -1), jnp.argmax(logits, -1).astype(labels.dtype) == labels


class RunHparams(NamedTuple):
    """Per-run traced inputs; a sweep stacks them along a leading run axis."""

    key: jax.Array  # PRNGKey(seed): derives the initial parameters and every epoch's shuffle
    learning_rate: jax.Array  # initial learning rate, ()
    mode_mask: tuple[jax.Array, ...]  # one 0/1 vector (p_max_l,) per layer at the start; () for bp
    prune_tau: jax.Array  # (), the cumulative tau share pruned (0: none; used when recipe.prune_every > 0)


#: Codes of ``TrainState.divergence_cause``.
DIVERGENCE_CAUSES = {1: "loss became nan", 2: "loss became inf"}


class TrainState(NamedTuple):
    """State of one run. A run whose loss stops being finite is frozen at the parameters that
    gave that loss (its gradients are never applied, so its optimizer state stays finite); ``diverged_epoch`` (0-based, -1 while healthy) and
    ``divergence_cause`` (a key of :data:`DIVERGENCE_CAUSES`, 0 while healthy) say when and why."""

    params: dict[str, list[jax.Array]]
    opt_state: optax.OptState
    diverged_epoch: jax.Array
    divergence_cause: jax.Array
    mode_mask: tuple[jax.Array, ...]  # the active modes now: the run's mask, less what pruning removed


class EpochMetrics(NamedTuple):
    """Metrics of one epoch (a run axis in front in a sweep)."""

    train_loss: jax.Array  # mean minibatch loss (without penalties) over the epoch
    train_accuracy: jax.Array  # mean minibatch accuracy over the epoch
    test_loss: jax.Array  # loss on the whole test set after the epoch
    test_accuracy: jax.Array  # accuracy on the whole test set after the epoch
    diverged_epoch: jax.Array  # -1, or the epoch in which the run diverged (then frozen)
    divergence_cause: jax.Array  # 0, or a key of DIVERGENCE_CAUSES
    active_modes: jax.Array | None = None  # (L,) active modes per mode layer after the epoch
    val_loss: jax.Array | None = None  # loss on the validation set after the epoch (when the data hold one)
    val_accuracy: jax.Array | None = None  # accuracy on the validation set after the epoch


class DataArrays(NamedTuple):
    train_images: jax.Array
    train_labels: jax.Array
    test_images: jax.Array
    test_labels: jax.Array
    val_images: jax.Array | None = None
    val_labels: jax.Array | None = None


class RunInfo(NamedTuple):
    """Host-side description of one run of a sweep."""

    method: str
    modes: tuple[int, ...]
    seed: int
    learning_rate: float
    param_count: int
    prune_tau: float = 0.0


class Sweep(NamedTuple):
    """A grid of runs as one program: the static recipe, the stacked per-run inputs, and a
    host-side description of each run."""

    recipe: Recipe
    runs: RunHparams  # fields stacked along a leading run axis (``len(runs)`` counts fields)
    infos: list[RunInfo]

    @property
    def num_runs(self) -> int:
        """The number of runs in the sweep."""
        return len(self.infos)


class TrainResult(NamedTuple):
    state: TrainState  # final state, leading run axis
    initial_test_accuracy: np.ndarray  # (runs,)
    metrics: EpochMetrics  # numpy arrays of shape (epochs, runs)
    wall_time_s: float


def _optimizer(recipe: Recipe, learning_rate: jax.Array, steps_per_epoch: int):
    schedule = optax.exponential_decay(
        learning_rate, transition_steps=recipe.lr_halving_epochs * steps_per_epoch,
        decay_rate=0.5, staircase=True,
    )
    if recipe.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(recipe.weight_decay), optax.sgd(schedule))
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=recipe.weight_decay)


def _loss(params, images, labels, run: RunHparams, recipe: Recipe, key=None):
    logits = apply(params, images, spec=recipe.spec, mode_mask=run.mode_mask, key=key)
    losses, correct = per_example_loss(logits, labels, recipe.loss)
    extra = penalty(
        params, recipe.spec, run.mode_mask,
        orthogonality=recipe.svd_orthogonality, sparsity=recipe.svd_sparsity,
    )
    return losses.mean() + extra, (losses.mean(), correct.sum())


def init_state(run: RunHparams, *, recipe: Recipe) -> TrainState:
    """Initial parameters (from ``fold_in(run.key, 0)``) and optimizer state of one run.

    Inactive (padded) modes start at exactly zero and stay there (their gradients are zero and
    weight decay keeps them at zero), so a run's parameters are correct without its mask.
    """
    params = init_params(jax.random.fold_in(run.key, 0), recipe.spec, dtype=jnp.dtype(recipe.dtype))
    params = zero_inactive_modes(params, recipe.spec, run.mode_mask or None)
    opt_state = _optimizer(recipe, run.learning_rate, 1).init(params)
    return TrainState(params, opt_state, jnp.int32(-1), jnp.int32(0), tuple(run.mode_mask))


EVAL_BATCH = 1000


def evaluate(params, run: RunHparams, images, labels, *, recipe: Recipe) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy of one run on ``(images, labels)``, in batches of 1000."""
    loss, correct = correct_count(params, run, images, labels, recipe=recipe)
    return loss, correct / labels.shape[0]


def correct_count(params, run: RunHparams, images, labels, *, recipe: Recipe) -> tuple[jax.Array, jax.Array]:
    """Mean loss and the number of correctly classified examples (int32, exact), in batches
    of 1000. The trainer reports accuracies as these counts over the number of examples,
    divided in float64 on the host, so a stored 0.9534 is 9534 / 10000 whatever the dtype."""

    def example(pair):
        logits = apply(params, pair[0][None], spec=recipe.spec, mode_mask=run.mode_mask)
        loss, correct = per_example_loss(logits, pair[1][None], recipe.loss)
        return loss[0], correct[0]

    loss, correct = jax.lax.map(example, (images, labels), batch_size=EVAL_BATCH)
    return loss.mean(), correct.sum(dtype=jnp.int32)


def _train_epoch_shared_order(
    states: TrainState, runs: RunHparams, data: DataArrays, epoch: jax.Array, *, recipe: Recipe
) -> tuple[TrainState, EpochMetrics]:
    """One epoch of a group of runs that share a seed, hence a data order (leading axis C).

    Every run of the group sees the same minibatches, so the first layer's products of the
    group become one wide matrix product ``x @ [xi_hat_1 ... xi_hat_C]`` instead of C thin ones.
    """
    n_train = data.train_images.shape[0]
    steps = n_train // recipe.batch_size
    key = jax.random.fold_in(jax.random.fold_in(runs.key[0], 1), epoch)
    batches = jax.random.permutation(key, n_train)[: steps * recipe.batch_size]
    batches = batches.reshape(steps, recipe.batch_size)
    grad_fn = jax.value_and_grad(_loss, has_aux=True)
    stochastic = get_method(recipe.spec.method).stochastic

    def run_step(state: TrainState, run: RunHparams, images, labels, index):
        # A stochastic method's noise: fold_in(fold_in(fold_in(key, 2), epoch), step), per run.
        noise = functools.reduce(jax.random.fold_in, (2, epoch, index), run.key) if stochastic else None
        current = run._replace(mode_mask=state.mode_mask)  # the mask pruning has left
        (total, (loss, accuracy)), grads = grad_fn(state.params, images, labels, current, recipe, noise)
        cause = jnp.where(jnp.isnan(total), 1, jnp.where(jnp.isinf(total), 2, 0))
        healthy = state.diverged_epoch < 0
        keep = healthy & (cause == 0)
        # A run whose loss is not finite is frozen: from then on its gradients and updates are
        # zero (checking the loss, a scalar, is free; a pass over every gradient costs 12 %).
        mask = functools.partial(jax.tree.map, lambda leaf: jnp.where(keep, leaf, jnp.zeros_like(leaf)))
        optimizer = _optimizer(recipe, run.learning_rate, steps)
        updates, opt_state = optimizer.update(mask(grads), state.opt_state, state.params)
        diverges = healthy & (cause > 0)
        return TrainState(
            optax.apply_updates(state.params, mask(updates)), opt_state,
            jnp.where(diverges, epoch.astype(jnp.int32), state.diverged_epoch),
            jnp.where(diverges, cause, state.divergence_cause).astype(jnp.int32), state.mode_mask,
        ), (loss, accuracy)

    def step(states: TrainState, inputs):
        batch, index = inputs
        images, labels = data.train_images[batch], data.train_labels[batch]
        return jax.vmap(run_step, in_axes=(0, 0, None, None, None))(states, runs, images, labels, index)

    states, (losses, accuracies) = jax.lax.scan(step, states, (batches, jnp.arange(steps)))
    if recipe.prune_every:
        states = jax.vmap(functools.partial(prune_state, epoch=epoch, recipe=recipe))(states, runs)
    counts = lambda images, labels: jax.vmap(
        lambda state, run: correct_count(state.params, run._replace(mode_mask=state.mode_mask), images, labels,
                                         recipe=recipe)
    )(states, runs)
    test_loss, test_correct = counts(data.test_images, data.test_labels)
    val_loss, val_correct = (None, None) if data.val_images is None else counts(data.val_images, data.val_labels)
    active = jnp.stack([m.sum(-1) for m in states.mode_mask], -1).astype(jnp.int32) if states.mode_mask else \
        jnp.zeros((states.diverged_epoch.shape[0], 0), jnp.int32)
    return states, EpochMetrics(  # accuracies as counts of correct examples (see correct_count)
        losses.mean(0), accuracies.sum(0), test_loss, test_correct, states.diverged_epoch, states.divergence_cause, active,
        val_loss, val_correct,
    )


def prune_state(state: TrainState, run: RunHparams, *, epoch: jax.Array, recipe: Recipe) -> TrainState:
    """``state`` after the pruning step that ends epoch ``epoch`` (a traced no-op in the other
    epochs, after ``recipe.prune_until`` and for a diverged run): the weakest modes by tau are
    masked (:func:`~mdl_jax._prune.prune_masks`) and zeroed in the parameters and in the
    optimizer's moments, so they stay zero as padded modes do."""
    done = epoch + 1
    due = (done % recipe.prune_every == 0) & (state.diverged_epoch < 0)
    if recipe.prune_until is not None:
        due &= done <= recipe.prune_until
    pruned = prune_masks(state.params, recipe.spec, state.mode_mask, run.prune_tau, recipe.min_modes)
    mask = tuple(jnp.where(due, new, old) for new, old in zip(pruned, state.mode_mask))
    return state._replace(params=zero_inactive_modes(state.params, recipe.spec, mask),
                          opt_state=zero_pruned(state.opt_state, state.params, recipe.spec, mask), mode_mask=mask)


def train_epoch(
    state: TrainState, run: RunHparams, data: DataArrays, epoch: jax.Array, *, recipe: Recipe
) -> tuple[TrainState, EpochMetrics]:
    """One epoch of one run: reshuffle, ``n_train // batch_size`` AdamW steps, test.

    The shuffle of epoch ``e`` comes from ``fold_in(fold_in(run.key, 1), e)``, so an epoch
    can be replayed or resumed on its own, and runs with one seed see the same minibatches.
    The last partial minibatch is dropped.
    """
    expand = functools.partial(jax.tree.map, lambda leaf: leaf[None])
    states, counts = _train_epoch_shared_order(expand(state), expand(run), data, epoch, recipe=recipe)
    state, counts = jax.tree.map(lambda leaf: leaf[0], (states, counts))
    return state, _fractions(counts, *_example_counts(recipe, data))


def _example_counts(recipe: Recipe, data) -> tuple[int, int, int]:
    """Training examples seen per epoch (whole minibatches), test and validation examples."""
    n_train, n_test = np.shape(data.train_images)[0], np.shape(data.test_labels)[0]
    n_val = 0 if data.val_labels is None else np.shape(data.val_labels)[0]
    return n_train // recipe.batch_size * recipe.batch_size, n_test, n_val


def _fractions(metrics: EpochMetrics, seen: int, n_test: int, n_val: int = 0, xp=jnp) -> EpochMetrics:
    """The epoch program's correct counts as accuracies (``xp=np``: exact float64 on the host)."""
    as_float = (lambda a: np.asarray(a, np.float64)) if xp is np else (lambda a: a.astype(jnp.result_type(float)))
    val = None if metrics.val_accuracy is None else as_float(metrics.val_accuracy) / n_val
    return metrics._replace(train_accuracy=as_float(metrics.train_accuracy) / seen,
                            test_accuracy=as_float(metrics.test_accuracy) / n_test, val_accuracy=val)


@functools.lru_cache(maxsize=None)
def compiled_sweep_fns(recipe: Recipe, group_size: int = 1):
    """``(init, epoch, test_accuracy)`` for a sweep, jitted once per recipe and group size.

    ``epoch(state, runs, data, epoch)`` trains every run (leading run axis) for one epoch; the
    runs are consecutive seed groups of ``group_size`` runs that share their minibatches (see
    :func:`_train_epoch_shared_order`). The run axis may be sharded over devices.
    """

    def epoch_fn(state: TrainState, runs: RunHparams, data: DataArrays, epoch: jax.Array):
        split = functools.partial(jax.tree.map, lambda a: a.reshape((a.shape[0] // group_size, group_size) + a.shape[1:]))
        merge = functools.partial(jax.tree.map, lambda a: a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:]))
        grouped = functools.partial(_train_epoch_shared_order, recipe=recipe)
        state, metrics = jax.vmap(grouped, in_axes=(0, 0, None, None))(split(state), split(runs), data, epoch)
        return merge(state), merge(metrics)

    only = Recipe(spec=recipe.spec, dtype=recipe.dtype, loss=recipe.loss, optimizer=recipe.optimizer)  # no pruning there
    init, test = _compiled_run_fns(only)
    return init, jax.jit(epoch_fn, donate_argnums=0), test


#: XLA options of the programs that run once per sweep (the initial draws): LLVM at -O1 instead
#: of the default -O3 compiles a network's draws 2.3x faster (784-100-100-10, 4 runs: 2.4 s ->
#: 1.0 s) and gives bitwise the same numbers (tests/test_train.py). The epoch keeps -O3: at -O1
#: it runs 10-20 % slower and rounds differently.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.lru_cache(maxsize=None)
def _compiled_run_fns(recipe: Recipe):
    """``(init, test_accuracy)`` of a sweep. They depend only on the architecture, the loss, the
    dtype and the optimizer (not on the seed groups, the schedule or the penalties), so the
    caller passes a recipe with only those fields set, and sweeps that differ elsewhere share
    one compilation."""
    init = jax.jit(jax.vmap(functools.partial(init_state, recipe=recipe)), compiler_options=RUN_ONCE_COMPILER_OPTIONS)
    test = jax.jit(jax.vmap(lambda state, run, x, y: correct_count(state.params, run._replace(mode_mask=state.mode_mask),
                                                                  x, y, recipe=recipe)[1],
                            in_axes=(0, 0, None, None)))
    return init, test


def run_footprint_bytes(recipe: Recipe) -> int:
    """Estimated device memory of one run while it trains (twice a tally of its arrays).

    Parameters, gradients, two Adam moments and the step's temporaries, plus the activations of
    a minibatch and of one evaluation batch.
    """
    n_params = param_count(recipe.spec)
    units = sum(recipe.spec.widths[1:]) + sum(recipe.spec.modes)
    activations = (4 * recipe.batch_size + 2 * EVAL_BATCH) * units
    return 2 * jnp.dtype(recipe.dtype).itemsize * (7 * n_params + activations)


class StepMemory(NamedTuple):
    """Bytes of one run's training step as XLA's buffer assignment plans it (exact for the
    compiled program, whatever the device)."""

    state_bytes: int  # parameters and optimizer moments
    batch_bytes: int  # one minibatch of images and labels
    temp_bytes: int  # the step's temporaries: activations, gradients, updates
    peak_bytes: int  # arguments + outputs - donated + temporaries


def step_memory(recipe: Recipe, run: RunHparams, input_shape: Sequence[int] | None = None) -> StepMemory:
    """:class:`StepMemory` of one training step (forward, backward, optimizer update, the state
    donated) of one run of a sweep (``select_run(sweep.runs, i)``) on a minibatch of
    ``recipe.batch_size`` examples of ``input_shape`` (default: the input width)."""
    shape = tuple(input_shape) if input_shape is not None else (recipe.spec.widths[0],)
    state = jax.eval_shape(functools.partial(init_state, recipe=recipe), run)
    images = jax.ShapeDtypeStruct((recipe.batch_size, *shape), jnp.dtype(recipe.dtype))
    labels = jax.ShapeDtypeStruct((recipe.batch_size,), jnp.int32)
    optimizer = _optimizer(recipe, run.learning_rate, 1)

    def step(state: TrainState, images, labels):
        grads = jax.grad(lambda params: _loss(params, images, labels, run, recipe)[0])(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

    stats = jax.jit(step, donate_argnums=0).lower(state, images, labels).compile().memory_analysis()
    nbytes = lambda tree: sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))
    peak = stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
    return StepMemory(nbytes((state.params, state.opt_state)), nbytes((images, labels)), int(stats.temp_size_in_bytes), int(peak))


def data_arrays(dataset: Dataset, dtype: str = "float32") -> DataArrays:
    """Puts a dataset on the default device once, in the recipe's dtype (with its validation
    set, if it holds one)."""
    val = (None, None) if dataset.val_images is None else \
        (jnp.asarray(dataset.val_images, dtype), jnp.asarray(dataset.val_labels))
    return DataArrays(
        jnp.asarray(dataset.train_images, dtype), jnp.asarray(dataset.train_labels),
        jnp.asarray(dataset.test_images, dtype), jnp.asarray(dataset.test_labels), *val,
    )


def train(
    recipe: Recipe,
    runs: RunHparams,
    dataset: Dataset | DataArrays,
    *,
    epochs: int,
    state: TrainState | None = None,
    start_epoch: int = 0,
    on_start: Callable[[np.ndarray], Any] | None = None,
    on_epoch: Callable[[int, EpochMetrics, Callable[[], TrainState]], Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    max_runs_per_chunk: int | None = None,
    max_padding: float | None = None,
) -> TrainResult:
    """Trains every run of a sweep for ``epochs`` epochs in one compiled program.

    The run axis is sharded over ``devices`` (default: all devices), and split into chunks
    trained one after another when the sweep would not fit in memory (see ``_layout``);
    neither changes any run's numbers beyond float rounding.

    Args:
      recipe: static settings (see :func:`build_sweep`).
      runs: per-run hyper-parameters with a leading run axis.
      dataset: the data, shared by all runs.
      epochs: number of epochs to train (counted from ``start_epoch``).
      state: a state to continue from (e.g. a checkpoint); default: fresh initialisation.
      start_epoch: index of the first epoch to run (selects its shuffle and schedule step).
      on_start: called with the test accuracy of the starting state, ``(runs,)``.
      on_epoch: called after every epoch with ``(epoch_index, metrics, get_state)``: host
        numpy metrics of shape ``(runs,)`` (the one host round-trip of each epoch), and a
        function returning the whole state as host arrays (for checkpoints).
      devices: devices to shard the runs over.
      max_runs_per_chunk: at most this many runs on the devices at once (default: from an
        estimate of each run's memory, :func:`run_footprint_bytes`).
      max_padding: split runs whose mode counts differ into several programs, each padded to
        its own largest counts, so that padded modes are at most this share of the executed
        FLOPs (:func:`~mdl_jax._layout.plan_programs`). Default ``None``: one program padded to
        the sweep's largest counts. Every run's numbers are those of the one-program sweep
        (float rounding aside): all runs start from the padded sweep's initial state.

    Returns:
      A :class:`TrainResult` with the final state (host arrays) and the per-epoch metrics.
    """
    data = dataset if isinstance(dataset, DataArrays) else data_arrays(dataset, recipe.dtype)
    if recipe.loss not in LOSSES:
        raise SpecError(f"unknown loss {recipe.loss!r}; choose one of {', '.join(LOSSES)}")
    if recipe.optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {recipe.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    check_data(recipe, data)
    start = time.perf_counter()
    program = _program_maker(data, devices, max_runs_per_chunk)
    plan = plan_programs(mode_counts(runs), recipe.spec.widths, max_padding=max_padding) if max_padding is not None and runs.mode_mask else []
    chunks = program(recipe, runs, state) if len(plan) <= 1 else _Programs(recipe, runs, state, plan, program)
    initial_accuracy = chunks.test_accuracy()
    if on_start is not None:
        on_start(initial_accuracy)
    history = []
    for epoch in range(start_epoch, start_epoch + epochs):
        history.append(chunks.epoch(epoch))
        if on_epoch is not None:
            on_epoch(epoch, history[-1], chunks.state)
    empty = np.zeros((0, len(runs.key)))
    layers = len(runs.mode_mask)
    stack = lambda field: None if field[0] is None else np.stack(field)
    stacked = EpochMetrics(*map(stack, zip(*history))) if history else EpochMetrics(
        *[empty] * 6, np.zeros((0, len(runs.key), layers), int), *[empty if data.val_images is not None else None] * 2)
    return TrainResult(chunks.state(), initial_accuracy, stacked, time.perf_counter() - start)


def _program_maker(data: DataArrays, devices, max_runs_per_chunk) -> Callable[..., _Chunks]:
    """``program(recipe, runs, state)``: those runs laid out on the devices as chunks, with the
    data placed once per set of devices."""
    placed = {}

    def program(recipe: Recipe, runs: RunHparams, state: TrainState | None) -> _Chunks:
        layout = plan_layout(np.asarray(runs.key), run_bytes=run_footprint_bytes(recipe),
                             data_bytes=sum(a.nbytes for a in data if a is not None), devices=devices, max_runs_per_chunk=max_runs_per_chunk)
        where = tuple(layout.mesh.devices.flat)
        if where not in placed:
            placed[where] = to_devices(data, layout.replicated)
        return _Chunks(recipe, layout, runs, placed[where], state)

    return program


class _Chunks:
    """The runs of a sweep on the devices, chunk by chunk: each chunk's state stays on the
    devices, or waits in host memory between epochs when there are several chunks."""

    def __init__(self, recipe: Recipe, layout: Layout, runs: RunHparams, data: DataArrays, state: TrainState | None):
        self.layout, self.data = layout, data
        self.seen, self.n_test, self.n_val = _example_counts(recipe, data)
        self.init, self.epoch_fn, self.test_fn = compiled_sweep_fns(recipe, layout.group_size)
        self.runs = [to_devices(chunk, layout.run_sharding) for chunk in _chunks(runs, layout)]
        if state is None:
            self.states = [self.init(chunk) for chunk in self.runs]
        else:
            self.states = [to_devices(chunk, layout.run_sharding) for chunk in _chunks(state, layout)]
        self.offload = layout.num_chunks > 1

    def _whole(self, trees):
        return jax.tree.map(lambda *parts: np.concatenate(parts)[: self.layout.num_runs], *trees)

    def test_accuracy(self) -> np.ndarray:
        """Test accuracy of every run's current state, ``(runs,)``; afterwards, with several
        chunks, the states move to host memory."""
        correct = self._whole([to_host(self.test_fn(s, r, self.data.test_images, self.data.test_labels))
                               for s, r in zip(self.states, self.runs)])
        accuracy = np.asarray(correct, np.float64) / self.n_test
        if self.offload:
            self.states = [to_host(s) for s in self.states]
        return accuracy

    def epoch(self, epoch: int) -> EpochMetrics:
        """Trains every chunk for one epoch; the metrics of all runs as host arrays."""
        metrics = []
        for c, chunk_runs in enumerate(self.runs):
            chunk_state = to_devices(self.states[c], self.layout.run_sharding) if self.offload else self.states[c]
            chunk_state, chunk_metrics = self.epoch_fn(chunk_state, chunk_runs, self.data, jnp.asarray(epoch, jnp.int32))
            metrics.append(to_host(chunk_metrics))
            self.states[c] = to_host(chunk_state) if self.offload else chunk_state
        return _fractions(self._whole(metrics), self.seen, self.n_test, self.n_val, xp=np)

    def state(self) -> TrainState:
        """The whole state, every run, as host arrays."""
        return self._whole([to_host(s) for s in self.states])


def mode_counts(runs: RunHparams) -> np.ndarray:
    """Active modes of every run and weight layer, ``(R, L)`` (``L = 0`` without modes)."""
    return np.stack([np.asarray(m).sum(-1) for m in runs.mode_mask], 1).astype(int) if runs.mode_mask else np.zeros((len(runs.key), 0), int)


def _resize(tree, like):
    """Every leaf of ``tree`` cut or zero-padded to the shape of the same leaf of ``like``,
    axis by axis from the front (modes are active from the first index on)."""
    def fit(leaf, target):
        leaf = np.asarray(leaf)[tuple(slice(0, n) for n in target.shape)]
        return np.pad(leaf, [(0, n - k) for n, k in zip(target.shape, leaf.shape)])
    return jax.tree.map(fit, tree, like)


class _Programs:
    """A sweep trained as several programs (``plan``: the run indices of each), each padded to
    its own largest mode counts; the interface of :class:`_Chunks`, with every result in the
    sweep's run order and padded to the sweep's largest counts."""

    def __init__(self, recipe: Recipe, runs: RunHparams, state: TrainState | None, plan: list[np.ndarray], program):
        init = compiled_sweep_fns(recipe)[0]
        state = jax.device_get(init(runs)) if state is None else state  # the padded sweep's start, exactly
        self.full, self.plan, self.programs, self.num_runs = jax.eval_shape(init, runs), plan, [], len(runs.key)
        counts = mode_counts(runs)
        for index in plan:
            modes = tuple(int(m) for m in counts[index].max(0))
            sub = recipe._replace(spec=recipe.spec._replace(modes=modes))
            sub_runs = select_run(runs, index)
            sub_runs = sub_runs._replace(mode_mask=tuple(m[:, :p] for m, p in zip(sub_runs.mode_mask, modes)))
            self.programs.append(program(sub, sub_runs, _resize(select_run(state, index), jax.eval_shape(compiled_sweep_fns(sub)[0], sub_runs))))

    def _scatter(self, parts):
        """One tree in the sweep's run order from the programs' trees."""
        def put(*leaves):
            out = np.zeros((self.num_runs,) + leaves[0].shape[1:], leaves[0].dtype)
            for index, leaf in zip(self.plan, leaves):
                out[index] = leaf
            return out
        return jax.tree.map(put, *parts)

    def test_accuracy(self) -> np.ndarray:
        return self._scatter([p.test_accuracy() for p in self.programs])

    def epoch(self, epoch: int) -> EpochMetrics:
        return self._scatter([p.epoch(epoch) for p in self.programs])

    def state(self) -> TrainState:
        like = lambda n: jax.tree.map(lambda a: jax.ShapeDtypeStruct((n,) + a.shape[1:], a.dtype), self.full)
        return self._scatter([_resize(p.state(), like(len(index))) for index, p in zip(self.plan, self.programs)])


def _chunks(tree, layout: Layout) -> list:
    """The padded run axis of ``tree`` cut into the layout's chunks (host arrays)."""
    index = layout.padding_index()
    padded = jax.tree.map(lambda a: np.asarray(a)[index], tree)
    size = layout.chunk_runs
    return [jax.tree.map(lambda a: a[c * size:(c + 1) * size], padded) for c in range(layout.num_chunks)]


def check_data(recipe: Recipe, data: Dataset | DataArrays) -> None:
    """Raises :class:`SpecError` unless ``recipe`` can train on ``data``: the input width
    equals the data's features, the output width covers its classes, and one minibatch fits
    in the training set."""
    n_in, n_out = recipe.spec.widths[0], recipe.spec.widths[-1]
    n_train, features = np.shape(data.train_images)
    if features != n_in:
        raise SpecError(
            f"the input width N_0 = {n_in} does not match the data's {features} "
            f"features per example: set widths[0] = {features}"
        )
    if recipe.batch_size > n_train:
        raise SpecError(
            f"batch_size {recipe.batch_size} is larger than the {n_train} training examples, so an "
            f"epoch would have no step: set batch_size <= {n_train} (the letter uses 100)"
        )
    num_classes = int(max(np.max(data.train_labels), np.max(data.test_labels))) + 1
    if recipe.loss == "mse" and n_out == 1 and num_classes <= 2:
        return
    if n_out < num_classes:
        raise SpecError(
            f"the output width N_L = {n_out} is smaller than the data's {num_classes} classes: "
            f"set widths[-1] = {num_classes}"
        )


def build_sweep(
    widths: Sequence[int],
    method: str,
    *,
    modes: Iterable[int | Sequence[int] | None] = (None,),
    seeds: Iterable[int] = (0,),
    learning_rates: Iterable[float] = (3e-3,),
    prune_taus: Iterable[float] = (0.0,),
    **recipe_kwargs,
) -> Sweep:
    """The grid ``modes x seeds x learning_rates x prune_taus`` of one method as a single program.

    Every layer is padded to the largest mode count of the grid, and each run carries a mask
    that switches its extra modes off.

    Args:
      widths: ``(N_0, ..., N_L)``.
      method: one of :data:`mdl_jax.METHODS`.
      modes: mode counts to sweep, each one int for every layer or one per layer; ``None``
        for ``bp`` (and for full-rank ``svd``).
      seeds: integer seeds.
      learning_rates: initial learning rates.
      prune_taus: pruning thresholds (with ``prune_every > 0``; :mod:`mdl_jax._prune`), each
        in ``[0, 1)``.
      **recipe_kwargs: the other fields of :class:`Recipe`.

    Raises:
      SpecError: for an invalid architecture or an empty grid.
    """
    specs = [make_spec(widths, p, method) for p in modes]
    seeds, learning_rates = list(seeds), [float(lr) for lr in learning_rates]
    if not specs or not seeds or not learning_rates:
        raise SpecError("a sweep needs at least one mode count, one seed and one learning rate")
    for lr in learning_rates:
        if not lr > 0:
            raise SpecError(f"learning rates must be > 0, got {lr}")
    prune_taus = [float(t) for t in prune_taus]
    check_pruning(method, prune_taus, recipe_kwargs.get("prune_every", 0), recipe_kwargs.get("min_modes", 1))
    padded = tuple(max(s.modes[l] for s in specs) for l in range(len(specs[0].modes)))
    recipe = Recipe(spec=make_spec(widths, padded or None, method), **recipe_kwargs)
    # Seed-major order: the runs of one seed are consecutive and share their minibatches.
    grid = list(itertools.product(seeds, specs, learning_rates, prune_taus))
    infos = [RunInfo(method, s.modes, int(seed), lr, param_count(s), tau) for seed, s, lr, tau in grid]
    runs = RunHparams(
        key=jnp.stack([jax.random.PRNGKey(info.seed) for info in infos]),
        learning_rate=jnp.asarray([info.learning_rate for info in infos], recipe.dtype),
        mode_mask=tuple(
            jnp.stack(layer)
            for layer in zip(*(mode_mask(info.modes, padded, recipe.dtype) for info in infos))
        ),
        prune_tau=jnp.asarray([info.prune_tau for info in infos], recipe.dtype),
    )
    return Sweep(recipe, runs, infos)


def check_pruning(method: str, prune_taus: Sequence[float], prune_every: int, min_modes: int) -> None:
    """Raises :class:`SpecError` for pruning settings that cannot work."""
    if prune_every < 0 or min_modes < 1:
        raise SpecError(f"prune_every must be >= 0 (0: no pruning) and min_modes >= 1, got {prune_every} and {min_modes}")
    for tau in prune_taus:
        if not 0 <= tau < 1:
            raise SpecError(f"prune_tau is a share of a layer's tau in [0, 1), got {tau}")
    entry = get_method(method)
    if prune_every and entry.has_modes and entry.shared_modes:
        raise SpecError(f"{method} shares its patterns between layers, so a mode cannot be pruned in one layer alone; "
                        "prune mdl or another method with its own modes per layer")


def select_run(tree, index: int):
    """Run ``index`` of a pytree with a leading run axis."""
    return jax.tree.map(lambda leaf: leaf[index], tree)
