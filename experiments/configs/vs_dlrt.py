"""MDL side by side with DLRT (rank-adaptive low-rank training, Schotthöfer et al., NeurIPS 2022)
on DLRT's own MNIST benchmarks.

Command (full; settings and goal fixed before the first run, 2026-12-06)::

    python -m experiments.vs_dlrt --out runs/vs_dlrt --data-dir DIR

LeNet-5 as DLRT's ``Lenet_experiment`` trains it: conv 1->20 5x5, max-pool, conv 20->50 5x5,
max-pool, dense 800->500, dense 500->10 (430,500 weights), plain SGD (no momentum) at lr 0.05,
batch 128, 20 epochs, no weight decay, the first 50,000 MNIST training images for training, the
last 10,000 for validation, the 10,000 test images for the test; 5 seeds in one program. DLRT
draws a new stratified 60k/10k split of all 70,000 images per run; ours is the standard split,
the same for every seed (the runs of a program share their data). Like DLRT's tables, a run's
test accuracy is the one at its epoch of lowest validation loss (the final epoch's is reported
too). The convolutions and the first dense layer are mode layers; the head stays dense, as in
DLRT. The sweeps: the dense model; MDL at fixed p at the ranks DLRT reports at its tolerances
0.11, 0.2 and 0.45 (so both count the same parameters), under DLRT's SGD and again under the
letter's Adam (lr 3e-3; plain SGD at 0.05 leaves some MDL seeds dead at 11.7 %, measured on
12,800 images); and adaptive MDL (Adam) starting at DLRT's starting ranks (10, 25, 250: DLRT
caps its ranks at half the smaller side) with tau pruning after every epoch up to
``prune_until``.

The fully connected 784-500-500-500-500-10 of DLRT's MNIST scripts: Adam lr 1e-3, batch 256,
the same 50k/10k/10k split; dense against MDL at fixed p and adaptive.

Goal, fixed before running: at each of DLRT's compression levels, a mean test accuracy over all
seeds at least DLRT's mean, in less wall time per epoch than the dense model.

Wall time on 2 CPU cores (AMD EPYC, 2026-12-06): LeNet-5 costs about 40 s per run and epoch,
dense or MDL (``benchmarks/lenet.py``), so the full settings (50 runs x 20 epochs) would take
about 12 hours there; docs/results.md reports the 4-epoch run (20 runs, 78 minutes beside
other jobs) and the 3-epoch MLP runs (6-7 minutes each). --quick: 2 seeds, 1 epoch on 5,000
images (80 s).
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError

PARTS = ("lenet", "mlp")

#: DLRT's stored LeNet-5 results (``Lenet_experiment/cross_val_tab_paper.csv``, 5 runs each):
#: tolerance -> (test accuracy mean %, std %, ranks of the best run, evaluation parameters as
#: DLRT counts them, evaluation compression %, training compression % as DLRT counts them).
DLRT_LENET = {
    "dense": (98.819, 0.064, None, 430_500, 0.0, 0.0),
    "0.11": (98.212, 0.438, (10, 20, 48), 30_278, 93.0, 52.0),
    "0.2": (98.115, 0.343, (8, 8, 15), 13_091, 97.0, 84.3),
    "0.45": (94.068, 0.486, (2, 2, 3), 6_647, 98.5, 95.9),
}


@dataclasses.dataclass(frozen=True)
class VsDlrtSettings:
    parts: tuple[str, ...] = ("lenet", "mlp")
    seeds: int = 5
    validation: int = 10_000  # the last training images, held out for the epoch selection
    n_train: int = 60_000  # training images read (the first ones; the last `validation` validate)
    n_test: int = 10_000
    # LeNet-5 (Lenet_experiment/run_lenet_mnist.py)
    lenet_epochs: int = 20
    lenet_lr: float = 0.05
    lenet_batch: int = 128
    lenet_ranks: tuple[int | tuple[int, ...], ...] = ((10, 20, 48), (8, 8, 15), (2, 2, 3))  # DLRT's, per tolerance
    lenet_p_max: tuple[int, ...] = (10, 25, 250)  # DLRT's starting ranks
    lenet_prune_taus: tuple[float, ...] = (0.05, 0.1, 0.2)
    lenet_prune_until: int = 10
    lenet_mdl_sgd: bool = True  # train MDL at the fixed ranks with DLRT's SGD
    lenet_mdl_adam_lr: float | None = 3e-3  # and with the letter's Adam at this lr (None: not)
    # the 784-500-500-500-500-10 MLP
    mlp_epochs: int = 20
    mlp_lr: float = 1e-3
    mlp_mdl_lr: float = 1e-3  # MDL's Adam learning rate (the letter's is 3e-3)
    mlp_batch: int = 256
    mlp_modes: tuple[int, ...] = (10, 20, 50)  # fixed p, the same in every layer
    mlp_p_max: int = 250
    mlp_prune_taus: tuple[float, ...] = (0.05, 0.1, 0.2)
    mlp_prune_until: int = 10

    def __post_init__(self):
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ConfigError(f"parts: unknown {unknown}; choose from {', '.join(PARTS)}")
        if not 0 < self.validation < self.n_train:
            raise ConfigError(f"validation = {self.validation} must be between 1 and n_train - 1 = {self.n_train - 1}")
        for part in ("lenet", "mlp"):
            epochs, until = getattr(self, f"{part}_epochs"), getattr(self, f"{part}_prune_until")
            if not 1 <= until <= epochs:
                raise ConfigError(f"{part}_prune_until = {until} must be between 1 and {part}_epochs = {epochs}")
        if not self.lenet_mdl_sgd and not self.lenet_mdl_adam_lr:
            raise ConfigError("lenet_mdl_sgd is false and lenet_mdl_adam_lr is null: MDL would not be trained; set one")
        for ranks in self.lenet_ranks:
            if isinstance(ranks, int) or len(ranks) != 3:
                raise ConfigError(f"lenet_ranks: each entry lists the modes of LeNet-5's 3 mode layers, got {ranks!r}")


QUICK = VsDlrtSettings(seeds=2, n_train=6_000, validation=1_000, n_test=2_000, lenet_epochs=1, lenet_prune_taus=(0.1,),
                       lenet_prune_until=1, lenet_p_max=(10, 25, 60), mlp_epochs=1, mlp_modes=(10,), mlp_p_max=40,
                       mlp_prune_taus=(0.1,), mlp_prune_until=1)
