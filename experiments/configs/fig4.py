"""Fig. 4 of the letter: online learning of a mode-decomposed committee machine, ODE vs SGD.

Command (full: t <= 1e5, 5 teachers x 8 seeds per configuration, d = 30-200 at alpha = 1,
alpha = 0.5-4 at d = 100, eps_g on a fixed set of 1e5 test samples)::

    python -m experiments.fig4 --out runs/fig4          # 595 s on 2 CPU cores (AVX-512) with panel (c)'s 24 teachers
                                                        # per alpha (ODE, 82 s of it; 2026-12-07); 1,026 s on
                                                        # slower cores, before the ODE solves ran on both at once

Expected (docs/results.md): up to t = 100 the gap to the ODE is 0.009-0.295 per teacher for
d >= 50, 0.94-2.36 seed standard errors; over 24 teachers per alpha at d = 100, the share of
log-time flat after the onset of learning does not fall with alpha (medians 0.25 / 0.17 / 0.16
/ 0.29 for alpha = 0.5 / 1 / 2 / 4) and alpha = 4 has the fewest teachers without a plateau
(25 %, against 42-58 %); at alpha = 4 two of the five simulated teachers are still on a plateau
at t = 1e5. Each d is stored as it finishes (``d<d>.npz``, ``plateau_ode.npz``); ``--resume``
continues a killed run from there.

--quick (t <= 3e3, 3 teachers x 4 seeds): about 1 minute on 2 CPU cores. ``dtype`` is the
precision of the teachers, students and ODE, ``simulation_dtype`` that of the SGD runs (float32
SGD follows float64 SGD within the seeds' noise down to eps_g of about 1e-14, at 1.7-2.1x the speed;
docs/results.md), both in force for this run only.
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError
from mdl_jax.online import ADAPTIVE_SOLVERS


@dataclasses.dataclass(frozen=True)
class Fig4Settings:
    dtype: str = "float64"  # of the teachers, the initial students and the ODE
    simulation_dtype: str = "float32"  # of the SGD runs (float64: twice the time; the same curves within the seeds' noise)
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
    fixed_test: bool = True  # eps_g on one fixed test set (the authors'), else fresh samples
    ode_solver: str = "rosenbrock23"  # online.ADAPTIVE_SOLVERS, at solve_ode's tolerances
    common_inputs: bool = True  # every teacher and alpha at one d learns from seed s's input stream (online.theory_vs_simulation)
    n_test: int = 100_000  # test samples per measurement (the authors: one fixed set of 1e5)
    seed: int = 0
    # Panel (b)'s plateaus over many teachers, from the ODE alone (its first `teachers` are the simulated ones);
    # the letter gives neither its Fig. 4b's alphas nor its teacher count: one teacher, and the alphas above are ours.
    plateau_teachers: int = 24
    plateau_n_times: int = 161  # a finer grid than the simulation's: 0.04 decades per interval at the full t range
    onset_fraction: float = 0.9  # learning has begun once eps_g <= this share of eps_0; plateaus count from there
    no_plateau_decades: float = 0.5  # a teacher without a flat stretch longer than this has no plateau

    def __post_init__(self):
        for name in ("dtype", "simulation_dtype"):
            if getattr(self, name) not in ("float32", "float64"):
                raise ConfigError(f"{name} must be float32 or float64, got {getattr(self, name)!r}")
        if self.plateau_teachers and self.plateau_teachers < self.teachers:
            raise ConfigError(f"plateau_teachers={self.plateau_teachers} must be 0 (none) or at least teachers={self.teachers}: "
                              "the simulated teachers are the first of them")
        if not 0 < self.onset_fraction <= 1:
            raise ConfigError(f"onset_fraction={self.onset_fraction} must be in (0, 1], e.g. 0.9")
        if self.ode_solver not in ADAPTIVE_SOLVERS:
            raise ConfigError(f"ode_solver must be one of {', '.join(ADAPTIVE_SOLVERS)}, got {self.ode_solver!r}")

    def configurations(self) -> list[dict]:
        """Panel (a)'s then panel (b)'s ``{"panel", "d", "alpha"}``."""
        return ([{"panel": "a", "d": d, "alpha": self.panel_a_alpha} for d in self.panel_a_d]
                + [{"panel": "b", "d": self.panel_b_d, "alpha": alpha} for alpha in self.panel_b_alpha])


QUICK = Fig4Settings(panel_a_d=(30, 60, 100), panel_b_alpha=(0.5, 1.0, 2.0, 3.0), t_max=3e3, n_times=25,
                     seeds=4, teachers=3, n_test=4000, plateau_teachers=6, plateau_n_times=60)
