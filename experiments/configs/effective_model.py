"""The companion study: the weight-space effective model of binary networks.

Command (full: 256 networks per case)::

    python -m experiments.effective_model --out runs/effective_model --data-dir DIR
    # 3,918 s on 2 CPU cores: training 1,602 s, fits 2,095 s (2026-11-25)

--quick (128 networks per case, 10-200 epochs, 100 samples per network): training 260 s,
fits 458 s. Expected (full / quick): ITR max s(d) 0.684 / 0.673; the shallow network's loop
by the authors' procedure 0.905 / 0.871 (BP) and 0.898 / 0.846 (chains), by the fit that
matches the data 0.066 / 0.071 (chains, median), verdict "not reproduced by a fit that
matches the data" (docs/results.md).

Every part is fitted twice: ``fit`` (the headline) and ``compare``. ``mcmc`` is Boltzmann
learning with Metropolis moments; ``bp`` is the authors' Boltzmann learning with BP moments
(SGD at rates 0.01 / 0.3, L2 1e-4, 100 iterations; BP undamped, restarted from N(0, 0.01)
messages at every iteration, stopped at mean |dm| <= 1e-4 or 1000 sweeps; best iterate after
iteration 50), whose landscapes are solved as the authors' are (undamped BP to max |dm| <= 1e-6
within 3000 sweeps, fresh messages for each sweep direction). The Metropolis fit's landscapes
use damped BP (0.5, to max |dm| <= 1e-4 within 1000 sweeps, warm-started along the whole
sweep): undamped BP does not converge on its stronger couplings (the Bethe entropy then
exceeds ln 2). References run from low to high model energy.
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError
from mdl_jax.landscape import BP_STARTS, FITS

PARTS = {"LB": slice(0, 300), "ITR": slice(300, 525), "RB": slice(525, 675), "FULL": slice(0, 675)}  # columns of a deep sample
LANDSCAPE_BP = {"bp": {"damping": 0.0, "tol": 1e-6, "max_sweeps": 3000, "restart": True},  # the authors', for their fit
                "mcmc": {"damping": 0.5, "tol": 1e-4, "max_sweeps": 1000}}  # undamped BP does not converge on this fit
NOTES_MEAN_ABS = {"J": {"LB": 0.0095, "ITR": 0.0040, "RB": 0.016}, "h": {"LB": 0.047, "ITR": 0.007, "RB": 0.089}}  # notes, section 4


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
    fit: str = "mcmc"  # the headline fit: Metropolis moments ("mcmc") or the authors' BP moments ("bp")
    compare: str = "bp"  # the other fit, reported beside each fit under "comparison" ("none": skip)
    bp_start: str = "zero"  # BP learning starts at J = h = 0 (the authors', to order 1/N^2) or at fields atanh(m) ("independent")
    bm_iterations: int = 100
    bm_burn_in: int = 51  # the BP fit's best iterate is taken from this iteration on (the authors': after 50)
    mcmc_iterations: int = 2000
    mcmc_chains: int = 512
    verify_chains: int = 128
    verify_sweeps: int = 200
    references: int = 20  # landscape references per deep part, low to high model energy
    shallow_references: int = 20
    field_step: float = 0.05
    check_references: int = 5  # deep references per fit whose d(x) is also simulated by Metropolis chains (0: none)
    shallow_check_references: int = 10  # the same for the shallow network (at least 5 for its verdict)
    check_chains: int = 32
    check_sweeps: int = 20  # per field value; d is averaged over the last half

    def cases(self) -> dict[str, tuple]:
        """``name: (widths, training images (None: all), epochs, accuracy threshold)``."""
        return {"under": ((20, 15, 15, 10), None, self.epochs_under, self.threshold_under),
                "over": ((20, 15, 15, 10), 500, self.epochs_over, self.threshold_over),
                "shallow": ((20, 10), None, self.epochs_shallow, self.threshold_shallow)}

    def fit_options(self, method: str) -> dict:
        """Keyword arguments of ``landscape.boltzmann_learning`` (``bp``, the authors' procedure;
        the key goes in as ``restart``) or ``boltzmann_learning_mcmc`` (``mcmc``)."""
        if method == "bp":
            return {"iterations": self.bm_iterations, "damping": 0.0, "criterion": "mean", "burn_in": self.bm_burn_in,
                    "start": self.bp_start}
        return {"iterations": self.mcmc_iterations, "chains": self.mcmc_chains}

    def examine_options(self, method: str, shallow: bool) -> dict:
        """Keyword arguments of ``landscape.examine`` for a fit by ``method``."""
        return {"references": self.shallow_references if shallow else self.references, "field_step": self.field_step,
                "verify_chains": self.verify_chains, "verify_sweeps": self.verify_sweeps, "check_chains": self.check_chains,
                "check_references": self.shallow_check_references if shallow else self.check_references,
                "check_sweeps": self.check_sweeps, "bp": LANDSCAPE_BP[method]}

    def __post_init__(self):
        if self.fit not in FITS:
            raise ConfigError(f"fit={self.fit!r} is not a fit; choose one of {', '.join(FITS)}")
        if self.compare not in (*FITS, "none") or self.compare == self.fit:
            raise ConfigError(f"compare={self.compare!r}: choose the fit other than fit={self.fit!r}, or none")
        if self.bp_start not in BP_STARTS:
            raise ConfigError(f"bp_start={self.bp_start!r}: choose zero (J = h = 0) or independent (fields atanh(m))")
        if not 0 <= self.bm_burn_in < self.bm_iterations:
            raise ConfigError(f"bm_burn_in={self.bm_burn_in} must be at least 0 and below bm_iterations={self.bm_iterations}")


QUICK = EffectiveModelSettings(networks=128, epochs_under=10, epochs_over=200, epochs_shallow=10, samples_per_network=100,
                               threshold_under=0.74, threshold_over=0.62, threshold_shallow=0.68, score_images=2000,
                               mcmc_iterations=600, mcmc_chains=256, references=3,
                               shallow_references=5, check_references=1, shallow_check_references=5)
