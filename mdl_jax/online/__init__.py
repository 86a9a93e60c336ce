"""Online learning of mode-decomposed committee machines (the letter's Fig. 4), one idea per module:

- :mod:`~mdl_jax.online.committee`: teacher and student committees (Eqs. 4-6), order parameters.
- :mod:`~mdl_jax.online.integrals`: the closed-form Gaussian integrals and ``eps_g``.
- :mod:`~mdl_jax.online.ode`: the mean-field ODE (Eq. 7) as a Diffrax vector field, its solvers.
- :mod:`~mdl_jax.online.simulate`: online SGD, many runs on one stream of inputs.
- :mod:`~mdl_jax.online.compare`: theory against simulation, Fig. 4's summaries.
- :mod:`~mdl_jax.online.fit`: fitting the ODE's inputs to simulated curves, with uncertainties.
- :mod:`~mdl_jax.online.design`: learning-rate schedules designed through the ODE.
"""

from mdl_jax.online.committee import (
    Committee as Committee,
    covariance as covariance,
    init_teacher_student as init_teacher_student,
    mode_coupling as mode_coupling,
    modes_for_load as modes_for_load,
    order_parameters as order_parameters,
    OrderParameters as OrderParameters,
)
from mdl_jax.online.integrals import (
    expectations as expectations,
    g as g,
    g_prime as g_prime,
    generalisation_error as generalisation_error,
    i2 as i2,
    i3 as i3,
    i4 as i4,
)
from mdl_jax.online.ode import (
    ADAPTIVE_SOLVERS as ADAPTIVE_SOLVERS,
    log_times as log_times,
    OdeArgs as OdeArgs,
    OdeSolution as OdeSolution,
    Rosenbrock23 as Rosenbrock23,
    solve_each as solve_each,
    solve_ode as solve_ode,
    vector_field as vector_field,
    vector_field_jacobian as vector_field_jacobian,
)
from mdl_jax.online.simulate import (
    simulate_runs as simulate_runs,
    simulate_sgd as simulate_sgd,
    Simulation as Simulation,
)
from mdl_jax.online.compare import (
    Plateaus as Plateaus,
    plateau_share as plateau_share,
    plateau_statistics as plateau_statistics,
    plateaus as plateaus,
    summarise as summarise,
    summarise_sweep as summarise_sweep,
    teacher_student_groups as teacher_student_groups,
    theory_only as theory_only,
    theory_vs_simulation as theory_vs_simulation,
    TheoryVsSimulation as TheoryVsSimulation,
    time_to_fraction as time_to_fraction,
)
from mdl_jax.online.fit import (
    fit as fit,
    fit_learning_rate as fit_learning_rate,
    FitResult as FitResult,
    FITTABLE as FITTABLE,
)
from mdl_jax.online.design import (
    Design as Design,
    design as design,
    rates_per_save as rates_per_save,
    gradient_check as gradient_check,
    schedule_edges as schedule_edges,
)
