"""Search spaces and samplers (grid, random, TPE, NSGA-II via Optuna ask-and-tell)."""

from frugalml.search._samplers import METHODS, Config, GridSampler, OptunaSampler, Sampler, Search, objective_values
from frugalml.search._space import config_id, to_distributions, validate_space

__all__ = [
    "METHODS",
    "Config",
    "GridSampler",
    "OptunaSampler",
    "Sampler",
    "Search",
    "config_id",
    "objective_values",
    "to_distributions",
    "validate_space",
]
