"""Adaptive modes against Fig. 2c's grid: does one pruning run find the least p?

Command (full; thresholds and criterion fixed before the first run, 2026-12-06)::

    python -m experiments.adaptive --out runs/adaptive --data-dir DIR    # 898 s on 2 CPU cores (2026-12-06)

784-N-N-10 on MNIST at N = 25, 100, 400, Fig. 2c's recipe (3 seeds x 15 epochs, lr 3e-3 halving
every 5 epochs, weight decay 1e-3 for 1L2P and 1e-4 for the authors' BP). The grid: 1L2P at
every p of ``grid_modes`` up to N, its least p the smallest whose mean accuracy (last 5 epochs)
reaches the authors' BP mean minus its seed standard deviation (the criterion of Fig. 2c).
Adaptive: one sweep per N starting from p_max = 70 in every layer, pruning after every epoch
up to epoch 10 at each threshold of ``prune_taus`` (then 5 epochs at the final masks); its
final modes per layer are compared with the grid's least p, its accuracy with the same
criterion. --quick: 2 widths, 2 seeds, 3 epochs (minutes on 2 CPU cores).

Expected (docs/results.md): grid least p 8, 12, 20 at N = 25, 100, 400; the adaptive runs keep
about 55, 37, 21 modes per layer at thresholds 0.02, 0.05, 0.1 whatever N, at 96.2-98.1 %;
grid 560 s, adaptive 219 s of training.
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError
from experiments.configs import Recipe


@dataclasses.dataclass(frozen=True)
class AdaptiveSettings(Recipe):
    seeds: int = 3
    epochs: int = 15
    lr: float = 3e-3
    lr_halving_epochs: int = 5
    widths: tuple[int, ...] = (25, 100, 400)
    grid_modes: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 16, 20, 30, 40, 60)  # Fig. 2c's, up to N
    baseline: str = "bp_fanin"  # the authors' BP: the baseline against which Fig. 2c finds a least p
    p_max: int = 70
    prune_taus: tuple[float, ...] = (0.02, 0.05, 0.1)
    prune_every: int = 1
    prune_until: int = 10
    min_modes: int = 1
    weight_decay: float = 1e-4  # the baseline (the authors' scripts)
    weight_decay_1l2p: float = 1e-3  # 1L2P (Fig2/MDL-1L2P.py)
    last_epochs: int = 5  # accuracies are means over each run's last epochs, as in Fig. 2

    def __post_init__(self):
        if not 1 <= self.last_epochs <= self.epochs - self.prune_until:
            raise ConfigError(f"last_epochs={self.last_epochs} must be between 1 and epochs - prune_until = "
                              f"{self.epochs - self.prune_until}: accuracies are measured at the final masks")


QUICK = AdaptiveSettings(seeds=2, epochs=3, widths=(25, 50), grid_modes=(2, 5, 10, 20), p_max=30, prune_taus=(0.05, 0.2),
                         prune_until=2, last_epochs=1)
