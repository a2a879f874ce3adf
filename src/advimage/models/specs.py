"""Alias of :mod:`advimage.specs`, where classifier specs (``MODEL+jpeg:75``, ``MODEL@weights``) live:
a spec combines a model and defenses, so it sits above both packages. Kept so that
``advimage.models.specs`` imports go on working; nothing in advimage imports it.
"""

from ..specs import apply_defense, check, load_classifier, parse, split_weights

__all__ = ["apply_defense", "check", "load_classifier", "parse", "split_weights"]
