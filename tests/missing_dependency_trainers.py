"""A training function whose module imports a package that is not installed: `frugalml tune` must
say which, in one line, before any trial (and not leave it to the first trial)."""

import no_such_dependency_xyz  # noqa: F401


def train(trial):
    trial.step(1.0)
