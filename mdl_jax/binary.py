"""Binary-weight networks (w = +-1) trained by local reparametrisation on PCA-projected data,
many at once, and samples of their weight configurations: the data of the weight-space
effective model (:mod:`mdl_jax.landscape`)."""

from mdl_jax._binary import (
    BinaryTraining as BinaryTraining,
    binary_logits as binary_logits,
    configuration_accuracy as configuration_accuracy,
    init_logits as init_logits,
    pca_project as pca_project,
    permute_hidden_units as permute_hidden_units,
    sample_weights as sample_weights,
    sampled_logits as sampled_logits,
    split_layers as split_layers,
    train_binary as train_binary,
    weight_samples as weight_samples,
)
