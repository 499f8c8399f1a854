"""Search spaces and samplers (grid, random, TPE, NSGA-II via Optuna ask-and-tell)."""

from frugalml.search._samplers import METHODS, Config, GridSampler, OptunaSampler, Sampler, Search, objective_values
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
