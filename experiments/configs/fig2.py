"""Fig. 2 of the letter: accuracy against p and width, dispersion, subspace overlaps.

Command (full, the letter's recipe: 5 seeds, 150 epochs, lr 3e-3 halving every 50 epochs)::

    python -m experiments.fig2 --out runs/fig2 --data-dir DIR    # hours on a GPU, days on 2 CPU cores

The largest run so far (3 seeds x 15 epochs, lr halving every 5 epochs, widths 10-400;
1,628 s of training on 2 CPU cores, 2026-11-25; accuracies are means of each run's last 5
epochs): 1L2P p = 30 97.42 % against standard BP 98.02 % and the authors' BP 96.49 %; least p
against the authors' BP 8, 8, 12, 12, 16, 20 at N = 10-400 (3.27 ln N - 1.14, R^2 0.90), none
against standard BP; overlaps MDL 0.71-0.74, authors' BP 0.89-0.97, standard BP 0.55-0.73
(docs/results.md).

--quick (2 seeds, 2 epochs, coarser grids): about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError
from experiments.configs import Recipe


PANELS = "abcdef"


@dataclasses.dataclass(frozen=True)
class Fig2Settings(Recipe):
    seeds: int = 5
    epochs: int = 150
    lr: float = 3e-3
    lr_halving_epochs: int = 50
    modes: tuple[int, ...] = (2, 5, 10, 15, 20, 30, 40, 50, 70)
    trajectory_modes: tuple[int, ...] = (20, 30)
    widths: tuple[int, ...] = (10, 25, 50, 100, 200, 400)
    width_modes: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 16, 20, 30, 40, 60)
    deep_modes: int = 30
    overlap_dim: int = 5
    baselines: tuple[str, ...] = ("bp", "bp_fanin")  # standard BP and the authors' (z = h W / sqrt(N_l))
    weight_decay: float = 1e-4  # 1L1P and the baselines (the authors' scripts)
    weight_decay_1l2p: float = 1e-3  # 1L2P (Fig2/MDL-1L2P.py)
    last_epochs: int = 5  # accuracies (least p included) are means over each run's last epochs
    panels: str = "abcdef"  # the panels to train and draw: e.g. "c" for the least p against width alone ("a" and "b" share runs)

    def weight_decay_of(self, method: str) -> float:
        return self.weight_decay_1l2p if method == "mdl" else self.weight_decay

    def __post_init__(self):
        unknown = sorted(set(self.panels) - set(PANELS))
        if unknown or not self.panels:
            raise ConfigError(f"panels={self.panels!r}: {'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'none chosen'}; "
                              f"name some of {PANELS!r}, e.g. panels=\"c\"")
        if not 1 <= self.last_epochs <= self.epochs:
            raise ConfigError(f"last_epochs={self.last_epochs} must be between 1 and epochs={self.epochs}")


QUICK = Fig2Settings(seeds=2, epochs=2, last_epochs=1, modes=(2, 5, 10, 30, 50), widths=(25, 50, 100), width_modes=(2, 5, 10, 20, 40))
