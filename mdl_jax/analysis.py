"""Analyses of trained mode networks: importance and removal of modes, the mode spectrum and its
two power laws, the least number of modes, pattern dispersion and orthogonality, subspace
overlap of class representations, and the geometric maps of the letter's Fig. 1."""

from mdl_jax._analysis import (
    LogFit as LogFit,
    Orthogonality as Orthogonality,
    RemovalCurves as RemovalCurves,
    TwoPowerLaws as TwoPowerLaws,
    accuracy as accuracy,
    class_subspaces as class_subspaces,
    fit_log_growth as fit_log_growth,
    fit_two_power_laws as fit_two_power_laws,
    geometric_maps as geometric_maps,
    layer_overlaps as layer_overlaps,
    least_modes as least_modes,
    mean_abs_cosine as mean_abs_cosine,
    mode_importance as mode_importance,
    mode_importance_parts as mode_importance_parts,
    pattern_dispersion as pattern_dispersion,
    pattern_orthogonality as pattern_orthogonality,
    removal_curves as removal_curves,
    removal_mask as removal_mask,
    subspace_overlap as subspace_overlap,
)
