"""Maximum-entropy (Ising) models of weight samples and their entropy landscape.

The least structured model of binary weight configurations ``s in {-1, +1}^N`` that
reproduces their means and pairwise correlations is

.. math:: P(s) = \\exp\\Big(\\sum_{i<j} J_{ij} s_i s_j + \\sum_i h_i s_i\\Big) / Z

(Zou & Huang 2021; ``effective-model-notes.md``). Here: belief propagation (BP) on the dense
graph, vectorised over all directed edges; Bethe free energy, mean energy and entropy;
inverse Ising by Boltzmann-machine learning with BP moments, cross-checked by
pseudo-likelihood and by Metropolis sampling; and the entropy landscape ``s(d)`` around a
reference configuration, swept down and up in a field ``x`` with warm starts.

One idea per module: :mod:`~mdl_jax.landscape.models` (Ising models and moments),
:mod:`~mdl_jax.landscape.bp` (belief propagation, Bethe quantities), :mod:`~mdl_jax.landscape.mcmc`
(Metropolis), :mod:`~mdl_jax.landscape.learning` (inverse Ising), :mod:`~mdl_jax.landscape.sweep`
(the entropy landscape), :mod:`~mdl_jax.landscape.verdicts` (fits examined, verdicts).
"""

from mdl_jax.landscape.models import (
    connected_moments as connected_moments,
    exact_moments as exact_moments,
    Ising as Ising,
    moment_errors as moment_errors,
    random_ising as random_ising,
    sample_moments as sample_moments,
    tree_ising as tree_ising,
)
from mdl_jax.landscape.bp import (
    belief_propagation as belief_propagation,
    bethe_entropy as bethe_entropy,
    bethe_free_entropy as bethe_free_entropy,
    BPResult as BPResult,
    mean_energy as mean_energy,
)
from mdl_jax.landscape.mcmc import (
    metropolis as metropolis,
    reversed_state_fraction as reversed_state_fraction,
)
from mdl_jax.landscape.learning import (
    boltzmann_learning as boltzmann_learning,
    boltzmann_learning_mcmc as boltzmann_learning_mcmc,
    BoltzmannFit as BoltzmannFit,
    BP_STARTS as BP_STARTS,
    pseudo_likelihood as pseudo_likelihood,
)
from mdl_jax.landscape.sweep import (
    distance_after_jump as distance_after_jump,
    distance_jumps as distance_jumps,
    entropy_bound as entropy_bound,
    entropy_landscape as entropy_landscape,
    field_sweep as field_sweep,
    hysteresis as hysteresis,
    Landscape as Landscape,
    metropolis_landscape as metropolis_landscape,
    MetropolisLandscape as MetropolisLandscape,
)
from mdl_jax.landscape.verdicts import (
    describe as describe,
    examine as examine,
    fit_and_examine as fit_and_examine,
    fit_parts as fit_parts,
    FITS as FITS,
    fits_by_method as fits_by_method,
    shallow_verdicts as shallow_verdicts,
)
