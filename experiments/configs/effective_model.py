"""The companion study: the weight-space effective model of binary networks.

Command (full: 256 networks per case)::

    python -m experiments.effective_model --out runs/effective_model --data-dir DIR
    # training about 19 minutes, fits about 35 minutes on 2 CPU cores

--quick (128 networks per case, 10-200 epochs, 100 samples per network): about 10 minutes on
2 CPU cores (597 s on 2026-11-25). Expected (quick): under-parametrised max s(d) LB 0.536,
ITR 0.673, RB 0.585; shallow BP jump 0.149, loop 0.155 (docs/results.md).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EffectiveModelSettings:
    networks: int = 256
    epochs_under: int = 30
    epochs_over: int = 300
    epochs_shallow: int = 30
    lr: float = 0.3
    samples_per_network: int = 200
    threshold_under: float = 0.76
    threshold_over: float = 0.63
    threshold_shallow: float = 0.70
    score_images: int = 10_000
    hidden_permutations: int = 4  # relabelled copies of every deep sample (0: pool as trained)
    fit: str = "mcmc"  # Boltzmann learning with Metropolis moments ("mcmc") or with BP moments ("bp", the notes')
    compare: str = "bp"  # the other fit, reported beside each fit under "comparison" ("none": skip)
    bp_start: str = "zero"  # BP learning starts at J = h = 0 ("zero", the textbook start) or at fields atanh(m) ("independent")
    bm_iterations: int = 100
    mcmc_iterations: int = 2000
    mcmc_chains: int = 512
    verify_chains: int = 128
    verify_sweeps: int = 200
    references: int = 20
    field_step: float = 0.05
    check_references: int = 5  # references per fit whose d(x) is also simulated by Metropolis chains (0: none)
    check_chains: int = 32
    check_sweeps: int = 20  # per field value; d is averaged over the last half


QUICK = EffectiveModelSettings(networks=128, epochs_under=10, epochs_over=200, epochs_shallow=10, samples_per_network=100,
                               threshold_under=0.74, threshold_over=0.62, threshold_shallow=0.68, score_images=2000,
                               mcmc_iterations=600, mcmc_chains=256, verify_chains=64, verify_sweeps=100, references=3,
                               check_references=1)
