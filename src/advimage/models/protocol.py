"""The classifier protocol that plain, defended, resized (native-size) and ensemble models share.

A classifier maps float pixels (N, 3, H, W) in [0, 255] to logits (N, C) and knows its
``config`` (what input it expects), ``class_names``, ``device``; ``predict`` gives classes
without gradient. The engine and the bench accept anything that implements it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .classifier import ModelConfig, predict_classes


@runtime_checkable
class Classifier(Protocol):
    config: ModelConfig
    class_names: list[str]

    def __call__(self, x: Tensor) -> Tensor: ...
    @property
    def device(self) -> torch.device: ...
    def predict(self, x: Tensor, batch_size: int = 64) -> Tensor: ...
    def class_name(self, index: int) -> str: ...


class WrappedClassifier(nn.Module):
    """Base of classifiers built around another one (``self.base``): a front-end layer
    (``front``) before it. Subclasses set ``front``; config, class names and device are the base's."""

    def __init__(self, base: nn.Module, front: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.front = front
        self.config = base.config
        self.class_names = list(base.class_names)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.base(self.front(x))

    @property
    def device(self) -> torch.device:
        return self.base.device

    def predict(self, x: Tensor, batch_size: int = 64) -> Tensor:
        return predict_classes(self, x, batch_size)

    def class_name(self, index: int) -> str:
        return self.base.class_name(index)


class ResizedClassifier(WrappedClassifier):
    """A model-resolution classifier behind its eval transform, as a differentiable layer
    (thesis Ch. 9, Scenario B, eq. 9.5: the downscaler D is layer 0 and gradients flow through Dᵀ).

    Input: float pixels (N, 3, H, W) of any size; the shorter side is resized to
    ``floor(input_size / crop_pct)`` with ``method`` (see :mod:`advimage.resize`), then centre
    cropped to ``input_size`` (``crop_pct`` overrides the model's; 1.0: the whole image resized,
    the thesis's Ch. 9 protocol on square images). ``method`` "pil-bicubic" reproduces Pillow's 8-bit resize exactly
    (rounding included, straight-through gradient); "torch-bicubic" is torchvision's float resize.
    """

    def __init__(self, base: nn.Module, method: str, crop_pct: float | None = None) -> None:
        from ..resize import EvalTransform

        c = base.config
        super().__init__(base, EvalTransform(c.input_size, crop_pct or c.crop_pct, method))
        self.method = method

    def extra_repr(self) -> str:
        return f"method={self.method!r}"


AGGREGATIONS = ("max", "avg", "worst")


class MultiPathClassifier(nn.Module):
    """One model behind several eval transforms: (N, 3, H, W) -> logits (N, P, C), one per path.

    Used with :class:`advimage.criteria.AllPaths` (success only when every path is fooled, loss the
    worst path's), so that a native-size file fools the model however a victim resizes it. The P
    resized crops go through the network as one batch of P·N. Also the ensemble of thesis §9.4.5:
    one model behind the six downscalers of §9.3.

    aggregation: how gradient attacks and quantizers combine the members' gradients (applied by
    :class:`advimage.oracle.LossOracle`; the loss value is always max_k L_k, §7.4.6):
    ``max`` the gradient of the member with the largest loss; ``avg`` the mean of the members'
    gradients (EOT); ``worst`` the gradient of the member farthest from its boundary,
    argmax_k L_k / ||∇L_k|| (§9.4.5, DeepFool-style distance).
    crop_pct: override of the model's (1.0: the whole image, as in the thesis's Ch. 9 protocol).
    """

    def __init__(self, base: nn.Module, methods: list[str], aggregation: str = "max",
                 crop_pct: float | None = None) -> None:
        from ..resize import EvalTransform

        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if not methods:
            raise ValueError("a multi-path classifier needs at least one resize method")
        c = base.config
        self.base = base
        self.fronts = nn.ModuleList([EvalTransform(c.input_size, crop_pct or c.crop_pct, m) for m in methods])
        self.methods = list(methods)
        self.aggregation = aggregation
        self.config = base.config
        self.class_names = list(base.class_names)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        crops = torch.cat([f(x) for f in self.fronts])
        logits = self.base(crops)
        return logits.view(len(self.fronts), x.shape[0], -1).transpose(0, 1)

    def members(self, xs: Tensor) -> Tensor:
        """Logits (N, P, C) where member k sees its own copy ``xs[:, k]`` of the input
        (xs: (N, P, 3, H, W)), so that one backward gives every member's gradient."""
        crops = torch.cat([f(xs[:, k]) for k, f in enumerate(self.fronts)])
        logits = self.base(crops)
        return logits.view(len(self.fronts), xs.shape[0], -1).transpose(0, 1)

    @property
    def device(self) -> torch.device:
        return self.base.device

    def predict(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """Classes (N,) on the first path."""
        return predict_classes(self, x, batch_size)

    def class_name(self, index: int) -> str:
        return self.base.class_name(index)

    def extra_repr(self) -> str:
        return f"methods={self.methods!r}, aggregation={self.aggregation!r}"


def victim_method(config: ModelConfig, victim: str, downscaler: str | None = None) -> str:
    """The resize method of a victim pipeline: ``pil`` (Pillow's 8-bit resize, what timm and
    torchvision do on PIL images) or ``float`` (torchvision's resize on a float tensor), with the
    model's own interpolation; ``downscaler`` (a name of :data:`advimage.resize.RESIZE_METHODS`)
    overrides it."""
    if downscaler:
        return downscaler
    if victim not in ("pil", "float"):
        raise ValueError(f"unknown victim {victim!r}; valid: pil, float")
    interp = config.interpolation if config.interpolation in ("bicubic", "bilinear") else "bicubic"
    return f"{'pil' if victim == 'pil' else 'torch'}-{interp}"
