"""One typed config per figure (a frozen dataclass and its QUICK variant, with the command,
wall time and expected numbers in the docstring). The JSON files are configs of mdl-jax train."""
