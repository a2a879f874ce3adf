"""Smart quantization followed by greedy pruning of the integer changes (issue: file distortion
closer to the attack's floats).

After §7.2's quantizer, x_q = x0 + k with k integer. Re-linearize the loss at x_q (one more
gradient g): undoing the change k_i moves the loss by about ``-g_i k_i`` and saves ``k_i²`` of
squared distortion. Changes are ranked by ``-g_i k_i / k_i²`` (cheapest loss per unit of distortion
saved first), and the largest number m of leading changes that can be undone while the *quantized*
image stays adversarial is found by a per-image bisection on m, one forward pass per trial.
``rounds`` repeats this from the pruned image (one gradient and ``prune_steps`` forwards each).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..criteria import Criterion
from ..distortion import distortion
from ..oracle import LossOracle
from ..tensor_ops import batch_view
from .base import QuantizedImages


def _undo(x0: Tensor, k: Tensor, rank: Tensor, m: Tensor) -> Tensor:
    """x0 + k with the changes of rank < m (per image) undone. rank: (N, n) ranks of the pixels."""
    keep = (rank >= m[:, None]).view_as(k)
    return x0 + k * keep


@torch.no_grad()
def prune(model: nn.Module, x0: Tensor, xq: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
          steps: int = 8) -> tuple[Tensor, Tensor, LossOracle]:
    """Undo as many changes of ``xq - x0`` as possible, greedily (module docstring).

    x0, xq: (N, 3, H, W) integral pixels, xq adversarial. Returns (pruned pixels (N, 3, H, W) float,
    number of changes undone (N,), the oracle with its counts: 1 gradient, ``steps`` forwards).
    """
    oracle = LossOracle(model, y, targeted, max_gradients=1, max_forwards=steps)
    k = (xq - x0).round()
    _, g, _ = oracle.loss_and_grad(xq)
    kf, gf = k.flatten(1), g.flatten(1)
    changed = kf != 0
    # loss cost of undoing each change per unit of squared distortion saved; unchanged pixels last
    score = torch.where(changed, -gf * kf / kf.pow(2).clamp_min(1), torch.full_like(gf, float("inf")))
    rank = torch.empty_like(score, dtype=torch.long)
    rank.scatter_(1, score.argsort(1), torch.arange(score.shape[1], device=score.device).expand_as(score))
    lo = torch.zeros(len(xq), dtype=torch.long, device=xq.device)          # known adversarial
    hi = changed.sum(1) + 1                                                # known not (or beyond)
    best = xq.clone()
    for _ in range(steps):
        mid = (lo + hi) // 2
        active = mid > lo
        if not bool(active.any()):
            break
        trial = _undo(x0, k, rank, mid)
        ok = oracle.success(oracle.logits(trial)) & active
        lo = torch.where(ok, mid, lo)
        hi = torch.where(active & ~ok, mid, hi)
        best = torch.where(batch_view(ok), trial, best)
    return best, lo, oracle


def prune_rounds(model: nn.Module, x0: Tensor, q: QuantizedImages, y: Tensor | Criterion, *, targeted: bool = False,
                 prune_steps: int = 8, rounds: int = 2) -> QuantizedImages:
    """``rounds`` of :func:`prune` on the images ``q`` quantized successfully; passes added to q's."""
    x0f = x0.float().round()
    pixels, gradients, forwards = q.pixels.float(), q.gradients.clone(), q.forwards.clone()
    todo = q.success.nonzero().flatten()
    sub = (y[todo] if isinstance(y, Tensor) else y.subset(todo)) if todo.numel() else None
    for _ in range(rounds if todo.numel() else 0):  # each round re-linearizes at the pruned image
        pruned, _, oracle = prune(model, x0f[todo], pixels[todo], sub, targeted=targeted, steps=prune_steps)
        pixels[todo] = pruned
        gradients[todo] += oracle.gradients.to(gradients)
        forwards[todo] += oracle.forwards.to(forwards)
    return QuantizedImages(pixels=pixels.clamp(0, 255).to(torch.uint8), success=q.success,
                           distortion=distortion(pixels, x0f), lam=q.lam, gradients=gradients, forwards=forwards,
                           suffix=".png")
