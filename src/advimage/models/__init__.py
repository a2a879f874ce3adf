"""Classifiers that take pixels in [0, 255]: registry and sources."""

from . import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0/1/2)
from .classifier import ModelConfig, PixelClassifier
from .registry import MODELS, UnknownModelError, get, names, register
from .weights import WeightsError, load_state_dict


def load_model(name: str = "efficientnet_lite0", device: str | None = None, **kwargs) -> PixelClassifier:
    """Build a model by name (see :func:`names`) in eval mode, on ``device`` (default: CUDA if available)."""
    import torch

    model = get(name, **kwargs)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(dev).eval()


__all__ = ["MODELS", "ModelConfig", "PixelClassifier", "UnknownModelError", "WeightsError", "get", "load_model",
           "load_state_dict", "names", "register"]
