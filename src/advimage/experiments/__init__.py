"""Experiments reproducing the thesis tables, one module per table (``scaling``: three of Ch. 9).

Each module registers its ``advimage experiment NAME`` sub-command in :data:`EXPERIMENTS`
(:mod:`.registry`); importing this package imports them all, so the registry is complete.
"""

from . import (  # noqa: F401  (each registers its experiments)
    app_a,
    app_b,
    jpeg_defense,
    jpeg_table,
    quantization_table,
    scaling,
    scaling_fig92,
    squeezing,
    stego_table,
)
from .registry import EXPERIMENTS, Experiment, UnknownExperimentError, experiment

__all__ = ["EXPERIMENTS", "Experiment", "UnknownExperimentError", "experiment"]
