"""Online learning of mode-decomposed committee machines (the letter's Fig. 4).

Mean-field ODEs for the order parameters ``Q, M`` (integrated with Diffrax), their closed-form
Gaussian integrals, simulated online SGD, and gradient-based fitting of theory to simulation
(:func:`fit`: any subset of the ODE's inputs, with standard errors).
"""

from mdl_jax._fit import (
    FITTABLE as FITTABLE,
    FitResult as FitResult,
    fit as fit,
)
from mdl_jax._online import (
    ADAPTIVE_SOLVERS as ADAPTIVE_SOLVERS,
    Committee as Committee,
    OdeArgs as OdeArgs,
    OdeSolution as OdeSolution,
    OrderParameters as OrderParameters,
    Rosenbrock23 as Rosenbrock23,
    Simulation as Simulation,
    TheoryVsSimulation as TheoryVsSimulation,
    covariance as covariance,
    expectations as expectations,
    fit_learning_rate as fit_learning_rate,
    g as g,
    g_prime as g_prime,
    generalisation_error as generalisation_error,
    i2 as i2,
    i3 as i3,
    i4 as i4,
    init_teacher_student as init_teacher_student,
    log_times as log_times,
    mode_coupling as mode_coupling,
    modes_for_load as modes_for_load,
    order_parameters as order_parameters,
    plateau_share as plateau_share,
    simulate_runs as simulate_runs,
    simulate_sgd as simulate_sgd,
    solve_each as solve_each,
    solve_ode as solve_ode,
    summarise as summarise,
    summarise_sweep as summarise_sweep,
    teacher_student_groups as teacher_student_groups,
    theory_vs_simulation as theory_vs_simulation,
    time_to_fraction as time_to_fraction,
    vector_field as vector_field,
)
