"""The experiment registry: each experiment module registers its ``advimage experiment NAME``
sub-command here (:func:`experiment`); :data:`EXPERIMENTS` is what the CLI builds them from.

This module imports none of the experiments, so they never import their package's ``__init__``
back (the ``__init__`` imports them all, which registers them).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry, UnknownNameError

#: ``build(experiment_subparsers, name, help) -> parser``: adds the sub-command's parser (options and
#: ``experiment_main``) under ``name`` with ``help``
Builder = Callable[[Any, str, str], argparse.ArgumentParser]


class UnknownExperimentError(UnknownNameError):
    """An experiment name that is not registered."""


@dataclass(frozen=True)
class Experiment:
    """A registered ``advimage experiment`` sub-command: its name, one-line help and parser builder."""

    name: str
    help: str
    build: Builder

    def add_parser(self, experiment_subparsers: Any) -> argparse.ArgumentParser:
        """Add this experiment's parser to ``advimage experiment``'s subparsers; returns it."""
        return self.build(experiment_subparsers, self.name, self.help)


#: name -> :class:`Experiment`
EXPERIMENTS: Registry[Experiment] = Registry("experiment", UnknownExperimentError)


def experiment(name: str, help: str) -> Callable[[Builder], Callable[[Any], argparse.ArgumentParser]]:
    """Register the decorated builder as ``advimage experiment NAME``; the decorated name becomes
    ``add_parser(experiment_subparsers) -> parser`` (name and help bound)."""
    def deco(build: Builder) -> Callable[[Any], argparse.ArgumentParser]:
        return EXPERIMENTS.register(name, Experiment(name, help, build), help).add_parser
    return deco
