"""Compatibility: the per-image bracket search lives in :mod:`advimage.search`."""

from ..search import BracketSearch

__all__ = ["BracketSearch"]
