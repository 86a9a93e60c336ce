"""One typed config per figure (a frozen dataclass and its QUICK variant, with the command,
wall time and expected numbers in the docstring). The JSON files are configs of mdl-jax train."""


class Recipe:
    """The training recipe of an MNIST figure's settings (fields ``seeds``, ``lr``, ``epochs``,
    ``lr_halving_epochs``)."""

    def recipe(self, **extra) -> dict:
        """Keyword arguments of ``experiments.common.train_grid``, with ``extra`` added."""
        return {"seeds": range(self.seeds), "lr": self.lr, "epochs": self.epochs, "lr_halving_epochs": self.lr_halving_epochs, **extra}
