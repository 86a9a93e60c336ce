"""Network specifications: the static description of an architecture.

A :class:`NetworkSpec` fixes every shape of a network (widths, modes per layer, method), so it
is the static half of a training program; everything that varies between runs of one sweep
(seed, learning rate, active-mode mask) is traced data instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: Methods of the letter and its baselines (``mdl-method-notes.md`` sections 1 and 3).
#:
#: * ``mdl``: 1L2P mode decomposition, ``W = xi_hat diag(sigma) xi^T``, all factors free.
#: * ``mdl_1l1p``: 1L1P, the downstream patterns of layer l are the upstream ones of layer l+1.
#: * ``two_factor``: ``W = xi_hat xi^T`` (sigma fixed at one, not trained).
#: * ``bp``: plain weight matrices.
#: * ``svd``: ``W = U diag(|s|) V^T`` with orthogonality and sparsity penalties (Yang et al. 2020).
METHODS = ("mdl", "mdl_1l1p", "two_factor", "bp", "svd")

#: Methods whose layers are made of modes, and so take a mode count and a mode mask.
MODE_METHODS = ("mdl", "mdl_1l1p", "two_factor", "svd")


class SpecError(ValueError):
    """An architecture that cannot be built (bad widths, mode counts or method)."""


class NetworkSpec(NamedTuple):
    """Static description of a network.

    Attributes:
      widths: layer widths ``(N_0, ..., N_L)``; ``N_0`` is the input dimension and ``N_L``
        the number of classes.
      modes: mode count ``p_l`` of each of the ``L`` weight layers (the rank for ``svd``);
        empty for ``bp``.
      method: one of :data:`METHODS`.
    """

    widths: tuple[int, ...]
    modes: tuple[int, ...]
    method: str

    @property
    def num_layers(self) -> int:
        """Number of weight layers ``L``."""
        return len(self.widths) - 1

    @property
    def has_modes(self) -> bool:
        return self.method in MODE_METHODS


def make_spec(
    widths: Sequence[int], modes: int | Sequence[int] | None = None, method: str = "mdl"
) -> NetworkSpec:
    """Builds and validates a :class:`NetworkSpec`.

    Args:
      widths: ``(N_0, ..., N_L)``, at least an input and an output width, all >= 1.
      modes: one mode count for every layer, or one per weight layer. Required for the mode
        methods except ``svd``, whose rank defaults to ``min(N_l, N_{l+1})``; must be left
        out (``None``) for ``bp``.
      method: one of :data:`METHODS`.

    Raises:
      SpecError: naming the offending value and what would fix it.
    """
    if method not in METHODS:
        raise SpecError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    widths = tuple(widths)
    if len(widths) < 2:
        raise SpecError(
            f"widths {list(widths)} describe no weight layer: give at least an input and an "
            "output width, e.g. [784, 100, 100, 10]"
        )
    for n in widths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SpecError(f"every width must be an integer >= 1, got {n!r} in {list(widths)}")
    num_layers = len(widths) - 1
    if method == "bp":
        if modes is not None:
            raise SpecError("method 'bp' has plain weight matrices and takes no mode count")
        return NetworkSpec(widths, (), method)
    if modes is None:
        if method != "svd":
            raise SpecError(f"method {method!r} needs a mode count p (e.g. modes=30)")
        modes = tuple(min(a, b) for a, b in zip(widths[:-1], widths[1:]))
    if isinstance(modes, int):
        modes = (modes,) * num_layers
    modes = tuple(modes)
    if len(modes) != num_layers:
        raise SpecError(
            f"got {len(modes)} mode counts {list(modes)} for {num_layers} weight layers "
            f"(widths {list(widths)}): give one count, or one per weight layer"
        )
    for p in modes:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise SpecError(f"the number of modes p must be an integer >= 1, got {p!r}")
    if method == "mdl_1l1p" and len(set(modes)) > 1:
        raise SpecError(
            f"mdl_1l1p shares each hidden layer's patterns between two weight layers, so every "
            f"layer needs the same p; got {list(modes)}"
        )
    if method == "svd":
        for l, (p, n_in, n_out) in enumerate(zip(modes, widths[:-1], widths[1:])):
            if p > min(n_in, n_out):
                raise SpecError(
                    f"svd rank {p} of layer {l} exceeds min(N_l, N_l+1) = {min(n_in, n_out)}"
                )
    return NetworkSpec(widths, modes, method)
