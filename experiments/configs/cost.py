"""The letter's cost claim ("MDL saves a significant large amount of training costs") measured
on 784-N-N-10 against both baselines, width by width.

Command (full: N = 100-3200, 8 epochs of full MNIST each)::

    python -m experiments.cost --out runs/cost

Every network is trained on its own, one after another in one process, on a quiet machine:
times are comparable only within one run (``results.json`` records the machine and its load).
The target accuracy and the epochs are fixed here before anything runs.

--quick (N = 100 and 200, 2 epochs of 12,000 images): under a minute on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses

from mdl_jax import ConfigError


@dataclasses.dataclass(frozen=True)
class CostSettings:
    widths: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200)
    methods: tuple[str, ...] = ("bp", "bp_fanin", "mdl", "mdl_1l1p")  # mdl at `modes` and at Fig. 2c's least p
    modes: int = 30
    # Fig. 2c's least p against the authors' BP (3 seeds x 15 epochs, lr halving every 5 epochs;
    # docs/results.md); widths without one train mdl at `modes` only.
    least_modes: tuple[tuple[int, int], ...] = ((100, 12), (200, 16), (400, 20))
    target_accuracy: float = 0.97  # time to target: the first epoch whose test accuracy reaches it
    seed: int = 0  # one run per network, from this seed: times are of a single run
    epochs: int = 8  # epoch 1 compiles and warms up; epoch times are medians of epochs 2 on
    lr: float = 3e-3
    lr_halving_epochs: int = 5
    weight_decay: float = 1e-4  # 1L1P and the baselines (the authors' scripts)
    weight_decay_1l2p: float = 1e-3  # 1L2P (Fig2/MDL-1L2P.py)
    n_train: int = 60_000  # the first this many training images

    def weight_decay_of(self, method: str) -> float:
        return self.weight_decay_1l2p if method == "mdl" else self.weight_decay

    def __post_init__(self):
        if self.epochs < 2:
            raise ConfigError(f"epochs={self.epochs}: the cost study needs at least 2 (the first compiles and is not timed)")
        if not 0 < self.target_accuracy < 1:
            raise ConfigError(f"target_accuracy={self.target_accuracy} must be a fraction between 0 and 1, e.g. 0.97")
        unknown = sorted(set(self.methods) - {"bp", "bp_fanin", "mdl", "mdl_1l1p"})
        if unknown:
            raise ConfigError(f"methods {unknown} are not in the cost study; choose from bp, bp_fanin, mdl, mdl_1l1p")

    def networks(self, width: int) -> dict[str, tuple[str, int | None]]:
        """``{name: (method, modes)}`` trained at this width: ``mdl_least`` is 1L2P at Fig. 2c's
        least p there (when known, and other than ``modes``)."""
        least = dict(self.least_modes).get(width)
        out = {}
        for method in self.methods:
            out[method] = (method, None if method.startswith("bp") else self.modes)
            if method == "mdl" and least is not None and least != self.modes:
                out["mdl_least"] = ("mdl", least)
        return out


QUICK = CostSettings(widths=(100, 200), epochs=2, n_train=12_000, least_modes=((100, 12),))
