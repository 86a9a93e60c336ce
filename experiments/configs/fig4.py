"""Fig. 4 of the letter: online learning of a mode-decomposed committee machine, ODE vs SGD.

Command (full: t <= 1e5, 8 seeds, d = 30-200 at alpha = 1, alpha = 0.5-4 at d = 100)::

    python -m experiments.fig4 --out runs/fig4          # about an hour on 2 CPU cores

--quick (t <= 3e3, 4 seeds): about 45 s on 2 CPU cores; through the plateaus every
configuration with d >= 60 is within about 10 % of the ODE (docs/results.md). ``dtype`` is
the precision of the ODE and of the simulation, in force for this run only.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Fig4Settings:
    dtype: str = "float64"  # of the ODE and the simulation
    panel_a_d: tuple[int, ...] = (30, 50, 100, 200)
    panel_a_alpha: float = 1.0
    panel_b_d: int = 100
    panel_b_alpha: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    hidden: int = 8  # m = k
    eta: float = 5.0
    t_max: float = 1e5
    t_min: float = 0.1
    n_times: int = 40
    seeds: int = 8  # SGD runs per teacher
    teachers: int = 5  # per configuration; nested draws, so every alpha at one d shares its first modes
    redraw_student: bool = True  # the authors' rule: redraw once if (mean Q - mean P)^2 / 2 > 0.01
    fixed_test: bool = True  # eps_g on one fixed test set per teacher (the authors'), else fresh samples
    n_test: int = 100_000  # test samples per measurement (the authors: one fixed set of 1e5)
    seed: int = 0


QUICK = Fig4Settings(panel_a_d=(30, 60, 100), panel_b_alpha=(0.5, 1.0, 2.0, 3.0), t_max=3e3, n_times=25,
                     seeds=4, teachers=3, n_test=4000)
