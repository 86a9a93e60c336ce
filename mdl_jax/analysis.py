"""Analyses of trained mode networks: importance and removal of modes, the mode spectrum and its
two power laws, the least number of modes, pattern dispersion and orthogonality, subspace
overlap of class representations, and the geometric maps of the letter's Fig. 1."""

from mdl_jax._analysis import (
    FixedSplit as FixedSplit,
    LogFit as LogFit,
    ModeStudy as ModeStudy,
    Orthogonality as Orthogonality,
    RemovalCurves as RemovalCurves,
    RemovalStudy as RemovalStudy,
    TwoPowerLaws as TwoPowerLaws,
    accuracy as accuracy,
    accuracy_leading_and_tail as accuracy_leading_and_tail,
    class_subspaces as class_subspaces,
    fit_fixed_split as fit_fixed_split,
    fit_least_modes as fit_least_modes,
    fit_log_growth as fit_log_growth,
    fit_two_power_laws as fit_two_power_laws,
    geometric_maps as geometric_maps,
    layer_overlaps as layer_overlaps,
    least_modes as least_modes,
    mean_abs_cosine as mean_abs_cosine,
    mode_importance as mode_importance,
    mode_importance_parts as mode_importance_parts,
    mode_study as mode_study,
    pattern_dispersion as pattern_dispersion,
    pattern_orthogonality as pattern_orthogonality,
    removal_curves as removal_curves,
    removal_mask as removal_mask,
    removal_study as removal_study,
    subspace_overlap as subspace_overlap,
)
