"""The attack contract: result dataclass and budget accounting.

Every attack is a function ``run(model, x, y, *, steps, targeted=False, ...) -> AttackResult``
with ``x`` float pixels in [0, 255] of shape (N, 3, H, W) and ``y`` (N,) long labels (the
true class to move away from, or the target class when ``targeted``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from ..distortion import distortion
from ..losses import adversarial_loss, is_adversarial


LossFn = Callable[[Tensor, Tensor, bool], Tensor]


class BudgetExceeded(RuntimeError):
    """Raised when an attack asks for more gradients or queries than its budget."""


@dataclass
class AttackResult:
    """What an attack returns; all tensors are on the input's device.

    x_adv: (N, 3, H, W) float pixels in [0, 255]; the lowest-distortion successful
        point found per image, or the original where the attack failed.
    success: (N,) bool, whether ``x_adv`` fools the model (in float).
    distortion: (N,) float, eq. (6.2) of ``x_adv`` against the original, pixel units.
    gradients: (N,) long, forward+backward passes spent on each image.
    forwards: (N,) long, forward-only passes spent on each image.
    queries: (N,) long, label-only queries (black-box attacks).
    """

    x_adv: Tensor
    success: Tensor
    distortion: Tensor
    gradients: Tensor
    forwards: Tensor
    queries: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __post_init__(self) -> None:
        n = self.x_adv.shape[0]
        if self.queries.numel() == 0 and n:
            self.queries = torch.zeros(n, dtype=torch.long, device=self.x_adv.device)


class LossOracle:
    """Wraps a model to evaluate ``L_adv`` and its gradient while counting passes.

    Counting is per image: every image of the batch takes part in each pass. A pass that
    would take an image over ``max_gradients`` raises :class:`BudgetExceeded`.
    """

    def __init__(self, model: nn.Module, y: Tensor, targeted: bool = False,
                 max_gradients: int | None = None, max_forwards: int | None = None) -> None:
        self.model = model
        self.y = y
        self.targeted = targeted
        self.max_gradients = max_gradients
        self.max_forwards = max_forwards
        n = y.shape[0]
        self.gradients = torch.zeros(n, dtype=torch.long, device=y.device)
        self.forwards = torch.zeros(n, dtype=torch.long, device=y.device)

    def _charge(self, counter: Tensor, limit: int | None, what: str, mask: Tensor | None) -> None:
        inc = torch.ones_like(counter) if mask is None else mask.long()
        if limit is not None and bool(((counter + inc) > limit).any()):
            raise BudgetExceeded(f"attack asked for more than {limit} {what} per image")
        counter += inc

    def loss_and_grad(self, x: Tensor, loss_fn: LossFn = adversarial_loss) -> tuple[Tensor, Tensor, Tensor]:
        """Loss (N,), its gradient w.r.t. x (N,3,H,W) and logits (N,C), at float pixels x.

        loss_fn(logits, labels, targeted) -> (N,); default the margin loss L_adv (eq. 4.15).
        """
        self._charge(self.gradients, self.max_gradients, "gradients", None)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            loss = loss_fn(logits, self.y, self.targeted)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits (N, C) without gradient; counted as one forward pass."""
        self._charge(self.forwards, self.max_forwards, "forward passes", None)
        return self.model(x)

    def success(self, logits: Tensor) -> Tensor:
        return is_adversarial(logits, self.y, self.targeted)

    def loss(self, logits: Tensor) -> Tensor:
        return adversarial_loss(logits, self.y, self.targeted)


class BestTracker:
    """Keeps, per image, the successful point of lowest distortion seen so far."""

    def __init__(self, x0: Tensor) -> None:
        self.x0 = x0
        self.x_best = x0.clone()
        self.d_best = torch.full((x0.shape[0],), float("inf"), device=x0.device)
        self.found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)

    def update(self, x: Tensor, success: Tensor) -> None:
        d = distortion(x, self.x0).to(self.d_best.device)
        better = success & (d < self.d_best)
        self.d_best = torch.where(better, d, self.d_best)
        self.x_best = torch.where(better[:, None, None, None], x.detach(), self.x_best)
        self.found |= success

    def result(self, oracle: LossOracle, queries: Tensor | None = None) -> AttackResult:
        d = torch.where(self.found, self.d_best, torch.zeros_like(self.d_best))
        return AttackResult(
            x_adv=self.x_best, success=self.found.clone(), distortion=d,
            gradients=oracle.gradients.clone(), forwards=oracle.forwards.clone(),
            queries=queries if queries is not None else torch.zeros_like(oracle.gradients),
        )


def check_inputs(x: Tensor, y: Tensor) -> None:
    """Validate the attack contract's inputs with clear messages."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be (N, 3, H, W) pixels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be float pixels in [0, 255], got dtype {x.dtype}; use x.float()")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 255):
        raise ValueError("x must be pixels in [0, 255]; scale [0, 1] inputs by 255 first")
    if x.numel() > 1000 and float(x.max()) <= 1.0:
        import warnings
        warnings.warn("x looks like [0, 1] data; advimage expects pixels in [0, 255]", stacklevel=3)


def batch_view(t: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting over images."""
    return t.view(-1, 1, 1, 1)


def l2_normalize(g: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image unit-L2 direction of g (N, ...)."""
    n = g.flatten(1).norm(dim=1).clamp_min(eps)
    return g / n.view(-1, *[1] * (g.ndim - 1))
