"""Budgets, counted in one place: every model evaluation of attacks and quantizers goes
through a :class:`LossOracle` (gradients and forward passes) or a :class:`LabelOracle`
(label-only queries), which charge each image and refuse to exceed a budget.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .criteria import Criterion, as_criterion

#: loss_fn(logits, labels, targeted) -> (N,), for attacks that descend another loss than the criterion's
LossFn = Callable[[Tensor, Tensor, bool], Tensor]


class BudgetExceeded(RuntimeError):
    """Raised when an attack or a quantizer asks for more gradients or queries than its budget."""


class _Counter:
    def __init__(self, n: int, device: torch.device) -> None:
        self.gradients = torch.zeros(n, dtype=torch.long, device=device)
        self.forwards = torch.zeros(n, dtype=torch.long, device=device)

    @staticmethod
    def charge(counter: Tensor, limit: int | None, what: str, mask: Tensor | None) -> None:
        inc = torch.ones_like(counter) if mask is None else mask.long()
        if limit is not None and bool(((counter + inc) > limit).any()):
            raise BudgetExceeded(f"asked for more than {limit} {what} per image")
        counter += inc


class LossOracle(_Counter):
    """A model and a criterion: the loss, its gradient and success, with per-image counting.

    y: (N,) labels (with ``targeted``) or any :class:`~advimage.criteria.Criterion`.
    Every image of the batch takes part in each pass; a pass that would take an image over
    ``max_gradients`` / ``max_forwards`` raises :class:`BudgetExceeded`.
    """

    def __init__(self, model: nn.Module, y: Tensor | Criterion, targeted: bool = False,
                 max_gradients: int | None = None, max_forwards: int | None = None) -> None:
        self.model = model
        self.criterion = as_criterion(y, targeted)
        self.targeted = bool(getattr(self.criterion, "targeted", targeted))
        labels = getattr(self.criterion, "labels", None)
        self.y = labels
        n = len(self.criterion)  # type: ignore[arg-type]
        device = labels.device if labels is not None else getattr(self.criterion, "device", torch.device("cpu"))
        super().__init__(n, device)
        self.max_gradients = max_gradients
        self.max_forwards = max_forwards

    def loss_and_grad(self, x: Tensor, loss_fn: LossFn | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Loss (N,), its gradient w.r.t. x (N, 3, H, W) and logits (N, C) at float pixels x.

        loss_fn(logits, labels, targeted) -> (N,) replaces the criterion's loss (e.g. DDN's
        cross-entropy); success is always the criterion's.
        """
        self.charge(self.gradients, self.max_gradients, "gradients", None)
        if getattr(self.model, "aggregation", "max") in ("avg", "worst"):
            return self._ensemble_loss_and_grad(x, loss_fn)
        if getattr(self.model, "one_member_max", False):  # max over members run one at a time (PipelineClassifier)
            return self._max_member_loss_and_grad(x, loss_fn)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            if loss_fn is None:
                loss = self.criterion.loss(logits)
            else:
                loss = loss_fn(logits, self.y.to(logits.device), self.targeted)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()

    def _ensemble_loss_and_grad(self, x: Tensor, loss_fn: LossFn | None) -> tuple[Tensor, Tensor, Tensor]:
        """Ensemble of P members (logits (N, P, C), thesis §9.4.5): loss max_k L_k (§7.4.6), and
        the gradient aggregated as the model says: ``avg`` mean_k ∇L_k (EOT), ``worst`` ∇L_k* with
        k* = argmax_k L_k / ||∇L_k||. One forward and one backward of the P·N batch: each member
        sees its own copy of x, so the backward yields every member's gradient."""
        P = len(self.model.fronts)
        xs = x.detach().unsqueeze(1).expand(-1, P, *x.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model.members(xs)
            if loss_fn is None:
                member_loss = torch.stack([self.criterion.loss(logits[:, k]) for k in range(P)], 1)
            else:
                y = self.y.to(logits.device)
                member_loss = torch.stack([loss_fn(logits[:, k], y, self.targeted) for k in range(P)], 1)
            (grads,) = torch.autograd.grad(member_loss.sum(), xs)  # (N, P, 3, H, W)
        member_loss = member_loss.detach()
        if self.model.aggregation == "avg":
            grad = grads.mean(1)
        else:
            dist = member_loss / grads.flatten(2).norm(dim=2).clamp_min(1e-12)
            k = dist.argmax(1)
            grad = grads[torch.arange(len(x), device=x.device), k]
        return member_loss.amax(1), grad.detach(), logits.detach()

    def _max_member_loss_and_grad(self, x: Tensor, loss_fn: LossFn | None) -> tuple[Tensor, Tensor, Tensor]:
        """``max`` aggregation on a model that can run one member (``model.member(k, x)``): the loss
        max_k L_k from a forward of every member without gradient, the gradient (that of the max)
        from a backward through the member attaining it only, per image: P forwards and one
        backward instead of P backwards."""
        x = x.detach()
        with torch.no_grad():
            logits = self.model(x)  # (N, P, C)
            if loss_fn is None:
                member_loss = torch.stack([self.criterion.loss(logits[:, k]) for k in range(logits.shape[1])], 1)
            else:
                y = self.y.to(logits.device)
                member_loss = torch.stack([loss_fn(logits[:, k], y, self.targeted) for k in range(logits.shape[1])], 1)
        worst = member_loss.argmax(1)
        grad = torch.zeros_like(x)
        for k in worst.unique().tolist():
            idx = (worst == k).nonzero().flatten()
            xi = x[idx].clone().requires_grad_(True)
            with torch.enable_grad():
                out = self.model.member(k, xi)
                if loss_fn is None:
                    loss = self.criterion.subset(idx).loss(out)
                else:
                    loss = loss_fn(out, self.y.to(out.device)[idx], self.targeted)
                (grad[idx],) = torch.autograd.grad(loss.sum(), xi)
        return member_loss.amax(1), grad, logits

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits (N, C) without gradient; counted as one forward pass."""
        self.charge(self.forwards, self.max_forwards, "forward passes", None)
        return self.model(x)

    def success(self, logits: Tensor) -> Tensor:
        return self.criterion.success(logits)

    def loss(self, logits: Tensor) -> Tensor:
        return self.criterion.loss(logits)


class LabelOracle:
    """Label-only access to ``model`` that quantizes every query and counts it per image.

    ``__call__(xq, idx, counted)`` takes float pixels (m, C, H, W) for the images ``idx`` (m,)
    (distinct indices into the batch), quantizes them to integers in [0, 255], runs one forward
    and returns the quantized images, whether each is adversarial and the predicted labels
    (label-only access). ``counted`` (m,) bool
    marks the rows that are real queries (default: all); other rows ride along in the batch
    and their answers must be ignored by the caller.

    Budget: an image is counted at most once per call, so its count never exceeds the number
    of calls; a call beyond ``max_queries`` raises :class:`BudgetExceeded` before the model
    runs (no host-device synchronisation needed). :meth:`check` verifies the exact counts.
    """

    def __init__(self, model: nn.Module, y: Tensor, targeted: bool = False, max_queries: int | None = None) -> None:
        self.model = model
        self.y = y
        self.targeted = targeted
        self.max_queries = max_queries
        self.calls = 0
        self.queries = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)

    @torch.no_grad()
    def __call__(self, xq: Tensor, idx: Tensor, counted: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if self.max_queries is not None and self.calls >= self.max_queries:
            raise BudgetExceeded(f"attack asked for more than {self.max_queries} queries per image")
        self.calls += 1
        self.queries.index_add_(0, idx, torch.ones_like(idx) if counted is None else counted.long())
        xi = xq.round().clamp_(0, 255)  # every query is an 8-bit image
        pred = self.model(xi).argmax(1)
        y = self.y[idx]
        return xi, (pred == y) if self.targeted else (pred != y), pred

    def check(self) -> None:
        if self.max_queries is not None and bool((self.queries > self.max_queries).any()):
            raise BudgetExceeded(f"an image used more than {self.max_queries} queries")
