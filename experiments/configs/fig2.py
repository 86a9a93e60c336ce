"""Fig. 2 of the letter: accuracy against p and width, dispersion, subspace overlaps.

Command (full, the letter's recipe: 5 seeds, 150 epochs, lr 3e-3 halving every 50 epochs)::

    python -m experiments.fig2 --out runs/fig2 --data-dir DIR    # hours on a GPU, days on 2 CPU cores

The largest run so far (3 seeds x 15 epochs, widths 10-200: 813 s on 2 CPU cores) gave 1L2P
59.7 % (p = 2) to 97.6 % (p = 70) against BP 97.63 % +- 0.08, dispersion 9.90 / 4.21 / 3.99 /
3.73 over layers 1-4, and overlaps MDL 0.67-0.76 against BP 0.52-0.70 (docs/results.md).

--quick (2 seeds, 2 epochs, coarser grids): about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Fig2Settings:
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


QUICK = Fig2Settings(seeds=2, epochs=2, last_epochs=1, modes=(2, 5, 10, 30, 50), widths=(25, 50, 100), width_modes=(2, 5, 10, 20, 40))
