"""Network specifications: the static description of an architecture.

A :class:`NetworkSpec` fixes every shape of a network (widths, modes per layer, method), so it
is the static half of a training program; everything that varies between runs of one sweep
(seed, learning rate, active-mode mask) is traced data instead. Specs are built and checked by
:func:`mdl_jax.make_spec`, which asks the table of methods (``_methods``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class SpecError(ValueError):
    """An architecture that cannot be built (bad widths, mode counts or method)."""


class NetworkSpec(NamedTuple):
    """Static description of a network.

    Attributes:
      widths: layer widths ``(N_0, ..., N_L)``; ``N_0`` is the input dimension and ``N_L``
        the number of classes.
      modes: mode count ``p_l`` of each of the ``L`` weight layers (the rank for ``svd``);
        empty for a method with plain weights (``bp``).
      method: a name in :data:`mdl_jax.METHODS`.
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
        return bool(self.modes)


def full_ranks(widths: Sequence[int]) -> tuple[int, ...]:
    """``min(N_l, N_{l+1})`` of every weight layer: the most modes a layer can use."""
    return tuple(min(a, b) for a, b in zip(widths[:-1], widths[1:]))
