"""The small public API: ``load_model``, ``attack``, ``quantize``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attacks import AttackResult
from .attacks import get as _get_attack
from .data import LabelError, outside_classes, outside_target


def _pixels(x: Tensor) -> Tensor:
    if x.ndim == 3:
        x = x[None]
    return x.float()


def _check_classes(model: nn.Module, y: Tensor, targeted: bool = False) -> None:
    """Refuse labels (or targets) outside the classes of a model that declares them (y: (N,))."""
    config = getattr(model, "config", None)
    num_classes = getattr(config, "num_classes", None)
    if num_classes is None:
        return
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        name = getattr(config, "name", None)
        if targeted:
            raise LabelError(f"y[{i}]: {outside_target(int(y[i]), num_classes, name)}")
        raise LabelError(outside_classes(int(y[i]), num_classes, f"y[{i}]"))


def attack(model: nn.Module, x: Tensor, y: Tensor | int | None = None, *, attack: str = "bp", steps: int = 100,
           targeted: bool = False, **params) -> AttackResult:
    """Run a registered attack (see ``advimage.attacks.names()``) on pixels.

    x: (N, 3, H, W) or (3, H, W) pixels in [0, 255], uint8 or float. y: (N,) labels, a single int,
    or None for the model's own prediction (the class to move away from; the target if ``targeted``).
    Returns an AttackResult with float adversarial pixels; quantize them with :func:`quantize`.
    A label (or target) outside the model's ``config.num_classes`` raises
    :class:`~advimage.data.LabelError` (a ``ValueError``) naming the model and its range.
    """
    device = next((b.device for b in model.buffers()), None) or next(model.parameters()).device
    x = _pixels(x).to(device)
    if y is None:
        with torch.no_grad():
            labels = model(x).argmax(1)
    elif isinstance(y, int):
        labels = torch.full((x.shape[0],), y, dtype=torch.long, device=device)
    else:
        labels = y
    _check_classes(model, labels, targeted)
    return _get_attack(attack)(model, x, labels.to(device), steps=steps, targeted=targeted, **params)
