"""Faster passes for the attack: bf16 autocast, channels_last, torch.compile.

:class:`FastClassifier` runs a classifier's network with the input in ``channels_last`` memory
format (convolutions then pick NHWC kernels, faster on tensor cores), under
``torch.autocast(dtype=bfloat16)`` (matrix products and convolutions in bf16, the rest in fp32), and
through ``torch.compile``. Its logits are fp32, and gradients reach the fp32 pixels.

The engine uses it for the attack's passes only (:class:`advimage.engine.Settings` ``precision``,
``channels_last``, ``compile``). The originals' check, the quantizer and the verification of every
file use the model as loaded: BP's bf16 floats sit on the boundary of the bf16 passes and mostly do
not fool the fp32 model (docs/results.md), so the quantizer, whose forwards decide what is written,
must see fp32 logits, and no success is claimed on the faster passes' word. The weights are
shared, not copied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .protocol import WrappedClassifier

PRECISIONS = ("fp32", "bf16")


class FastClassifier(WrappedClassifier):
    """``base`` (a pixel classifier, (N, 3, H, W) -> logits) with faster passes (module docstring).

    precision: ``fp32`` or ``bf16`` (autocast on the input's device type). channels_last: the
    input's memory format. compile: run ``torch.compile(base, dynamic=True)`` (dynamic shapes: the
    attacks shrink their batches as images finish, which would otherwise recompile).
    """

    _run: Callable[[Tensor], Tensor]  # set with object.__setattr__ in __init__ (not a submodule)

    def __init__(self, base: nn.Module, *, precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        super().__init__(base, nn.Identity())
        self.precision = precision
        self.channels_last = channels_last
        self.compiled = compile
        # not registered as a submodule: it is ``base`` itself or its compiled wrapper (same parameters)
        object.__setattr__(self, "_run", torch.compile(base, dynamic=True) if compile else base)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self._run(x)
        return out.float()

    def extra_repr(self) -> str:
        return f"precision={self.precision!r}, channels_last={self.channels_last}, compile={self.compiled}"


def fast_classifier(model: nn.Module, *, precision: str = "fp32", channels_last: bool = False,
                    compile: bool = False) -> nn.Module:
    """``model`` itself when no option is set, else its :class:`FastClassifier` (one per model and
    options, kept in the model's attributes, so that a compiled graph is reused across batches)."""
    if precision == "fp32" and not channels_last and not compile:
        return model
    key = (precision, channels_last, compile)
    per_model = model.__dict__.setdefault("_advimage_fast", {})
    if key not in per_model:
        per_model[key] = FastClassifier(model, precision=precision, channels_last=channels_last, compile=compile)
    return per_model[key]
