"""Defense registry: ``register``, ``get``, ``names``, ``create``.

A defense is an ``nn.Module`` on float pixels in [0, 255] that wraps a classifier:
``get(name)(model, **params)`` builds it, e.g. ``get("jpeg")(model, quality=75)``. Registered:
``jpeg``, ``random-resize``, ``bits`` and ``median`` (:mod:`.squeeze`). A factory may carry a
``check_arg(text)`` attribute that refuses a bad spec argument (``MODEL+bits:0``) before any model
is built (:func:`advimage.specs.check`). The feature-squeezing *detector* is
:class:`~.feature_squeezing.FeatureSqueezingDetector`.
"""

from .feature_squeezing import FeatureSqueezingDetector
from .jpeg import JpegCompression, JpegDefense  # registers "jpeg"
from .random_resize import RandomDownscale, RandomResizeDefense  # registers "random-resize"
from .registry import DEFENSES, DefenseFactory, UnknownDefenseError, create, get, names, register
from .squeeze import BitDepth, BitDepthDefense, MedianDefense, MedianSmoothing, SqueezeDefense  # bits, median

__all__ = ["DEFENSES", "BitDepth", "BitDepthDefense", "DefenseFactory", "FeatureSqueezingDetector", "JpegCompression",
           "JpegDefense", "MedianDefense", "MedianSmoothing", "RandomDownscale", "RandomResizeDefense",
           "SqueezeDefense", "UnknownDefenseError", "create", "get", "names", "register"]
