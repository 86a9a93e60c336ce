"""Binary-weight networks (w = +-1) trained by local reparametrisation on PCA-projected data,
and samples of their weight configurations: the data of the weight-space effective model
(:mod:`mdl_jax.landscape`). The networks are the ``binary`` method: train them like any other
(``mdl_jax.train_and_evaluate`` with ``methods=["binary"]``, many at once)."""

from mdl_jax._binary import (
    L2_PENALTY as L2_PENALTY,
    apply_binary as apply_binary,
    binary_logits as binary_logits,
    configuration_accuracy as configuration_accuracy,
    init_binary as init_binary,
    init_logits as init_logits,
    pca_project as pca_project,
    permute_hidden_units as permute_hidden_units,
    sample_weights as sample_weights,
    sampled_logits as sampled_logits,
    split_layers as split_layers,
    weight_samples as weight_samples,
)
