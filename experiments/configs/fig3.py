"""Fig. 3 of the letter: removing modes, and the tau spectrum. 784-100-100-10, 1L1P, p = 70.

Command (full: 10 networks, 150 epochs, the authors' lr 0.01 halving every 30 epochs)::

    python -m experiments.fig3 --out runs/fig3 --data-dir DIR    # 931 s on 2 CPU cores (2026-11-25)

Expected (full): test accuracy 97.93 % +- 0.11; with half the modes removed, weakest tau first
keeps 96.3 / 97.9 / 97.9 % against random order's 64.8 / 71.5 / 86.5 % (layers 1-3); the
authors' fixed split of layer 0's tau gives slopes -0.073 / -0.63 (docs/results.md).

--quick (2 networks, 2 epochs): about 1 minute on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses

from experiments.configs import Recipe


@dataclasses.dataclass(frozen=True)
class Fig3Settings(Recipe):
    seeds: int = 10
    epochs: int = 150
    lr: float = 1e-2  # the authors' Fig. 3 recipe (1L1P, p = 70, lr 0.01 halving every 30 epochs)
    lr_halving_epochs: int = 30
    modes: int = 70
    fractions: int = 11
    random_draws: int = 10
    fixed_split: int = 10  # the authors' Fig. 3b lines: ranks 1..10 and 11..p, fitted separately


QUICK = Fig3Settings(seeds=2, epochs=2)
