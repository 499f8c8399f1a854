"""Search spaces and samplers (grid, random, TPE, GP, NSGA-II via Optuna ask-and-tell)."""

from frugalml.search._samplers import METHODS, Config, GridSampler, Sampler, Search, objective_values
from frugalml.search._space import MAX_CONFIGURATIONS, check_size, config_id, grid_size, to_distributions, validate_space

__all__ = [
    "MAX_CONFIGURATIONS",
    "METHODS",
    "Config",
    "GridSampler",
    "OptunaSampler",
    "Sampler",
    "Search",
    "check_size",
    "config_id",
    "grid_size",
    "objective_values",
    "to_distributions",
    "validate_space",
]


def __getattr__(name: str):
    if name == "OptunaSampler":  # lazy: importing Optuna costs ~0.2 CPU-s that grid search never needs
        from frugalml.search._optuna import OptunaSampler

        return OptunaSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
