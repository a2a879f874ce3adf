"""Steganographic quantization (thesis Ch. 8, §8.3): the least detectable file that stays adversarial.

ℓ* = argmin_{L(ℓ) < 0} Σ w_i(ℓ_i) (eq. 8.11), with the loss linearized at x_a and the Lagrangian
solved per pixel (eq. 8.13; closed form eq. 8.14 for quadratic costs), λ searched on the
quantized image's success as in §7.2. Costs are computed on the cover x0:

* ``hill``: HILL (Li et al. 2014; eq. 8.3) from conseal, extended beyond ±1 as w(ℓ) = ρ ℓ².
* ``mipod``: w(ℓ) = ℓ² / σ² (eq. 8.4), σ² the MiPOD variance of the Wiener residual (Sedighi et
  al. 2016, eqs. 24-26: conseal's ``estimate_variance``, block 9, degree 9, floor 0.01). Not
  conseal's ``mipod.compute_cost``, which returns Fisher information, not this cost.
* ``gina``: the MiPOD costs embedded lattice by lattice with CMD-style updates (eq. 8.5; Li et
  al. 2015 and Wang et al. 2019), see :func:`quantize_gina`.

df follows Ch. 7's convention everywhere in advimage (d_f + 1 choices per pixel): Ch. 8's d_f
counts the choices, so Ch. 8's d_f = 2 is ``df=1`` here and Ch. 8's d_f = 4 is ``df=3``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from ..criteria import Criterion
from ..oracle import LossOracle
from ..search import BracketSearch
from ..tensor_ops import batch_view
from .base import QuantizedImages, register
from .spatial import _as_pixels, _result, admissible_bounds, argmin_costs, check_rival, hold_rival

# MiPOD's variance estimator settings (Sedighi et al. 2016, and conseal's defaults)
MIPOD_BLOCK = 9
MIPOD_DEGREE = 9
MIPOD_FLOOR = 0.01
# Largest finite cost: pixels HILL calls wet (flat areas) are not forbidden, only very expensive
WET_COST = 1e8
# CMD/GINA's discount of a change agreeing in sign with its neighbours' (eq. 8.5)
GINA_DISCOUNT = 9.0
# Green first (§8.2.4), then red and blue; within a channel, the 2x2 polyphase lattices
GINA_CHANNELS = (1, 0, 2)
GINA_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def _per_channel(x0: Tensor, fn) -> Tensor:
    """Apply ``fn(channel: (H, W) float64 array) -> (H, W) array`` to every channel of x0 (N, 3, H, W)."""
    planes = x0.detach().round().clamp(0, 255).cpu().numpy().astype(np.float64)
    out = np.stack([np.stack([fn(plane) for plane in image]) for image in planes])
    return torch.from_numpy(out).to(x0.device, torch.float32)


def hill_cost(x0: Tensor) -> Tensor:
    """HILL's ±1 cost ρ (eq. 8.3) of every pixel, per colour channel: (N, 3, H, W) > 0.

    conseal gives ρ with saturated pixels made wet on their forbidden side; the [0, 255] range is
    enforced by the quantizer, so the smaller of the two sides is kept, capped at ``WET_COST``.
    """
    import conseal

    def rho(plane: np.ndarray) -> np.ndarray:
        plus, minus = conseal.hill.compute_cost_adjusted(plane.astype(np.uint8))
        return np.minimum(np.minimum(plus, minus), WET_COST)
    return _per_channel(x0, rho).clamp_min(1e-12)


def mipod_variance(x0: Tensor) -> Tensor:
    """σ² of MiPOD's model (Sedighi et al. 2016): the locally fitted variance of the Wiener
    residual x − wiener2(x, 2×2), floored at 0.01, per channel: (N, 3, H, W) > 0."""
    import conseal

    def variance(plane: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # flat areas: conseal clips the local variance and says so
            warnings.simplefilter("ignore", UserWarning)
            residual = plane - conseal.mipod.wiener2(plane, (2, 2))
        var = conseal.mipod.estimate_variance(residual, MIPOD_BLOCK, MIPOD_DEGREE)
        return np.maximum(var, MIPOD_FLOOR)
    return _per_channel(x0, variance)


def mipod_cost(x0: Tensor) -> Tensor:
    """Weights 1/σ² of the quadratic MiPOD cost w(ℓ) = ℓ²/σ² (eq. 8.4): (N, 3, H, W)."""
    return 1.0 / mipod_variance(x0)


def lattice_masks(shape: tuple[int, ...], device: torch.device | str = "cpu") -> list[Tensor]:
    """GINA's 12 lattices in embedding order: bool masks (3, H, W), green first, then red, blue;
    in each channel the 2×2 polyphase grid (i mod 2, j mod 2). They partition the image."""
    _, h, w = shape[-3:]
    rows = torch.arange(h, device=device)[:, None] % 2
    cols = torch.arange(w, device=device)[None, :] % 2
    masks = []
    for c in GINA_CHANNELS:
        for a, b in GINA_PHASES:
            m = torch.zeros(3, h, w, dtype=torch.bool, device=device)
            m[c] = (rows == a) & (cols == b)
            masks.append(m)
    return masks


_CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def neighbour_mean(k: Tensor, done: Tensor) -> Tensor:
    """μ of eq. 8.5: the mean of the changes already made (``done`` (3, H, W) bool) among the
    4-connected neighbours in the same channel and the co-located pixels of the other channels.
    k: (N, 3, H, W) integer changes. Returns (N, 3, H, W), 0 where no neighbour is done yet."""
    made = k * done
    n_done = done.to(k.dtype).expand_as(k)
    kernel = _CROSS.to(k.device, k.dtype).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    spatial_sum = torch.nn.functional.conv2d(made, kernel, padding=1, groups=3)
    spatial_count = torch.nn.functional.conv2d(n_done, kernel, padding=1, groups=3)
    colour_sum = made.sum(1, keepdim=True) - made
    colour_count = n_done.sum(1, keepdim=True) - n_done
    count = spatial_count + colour_count
    return torch.where(count > 0, (spatial_sum + colour_sum) / count.clamp_min(1), torch.zeros_like(k))


def gina_costs(weight: Tensor, mu: Tensor):
    """w'(k) = w k² / 9 where sign(k) = sign(μ) ≠ 0, else w k² (eq. 8.5 on quadratic costs)."""
    def costs(k: Tensor) -> Tensor:
        agree = (torch.sign(k) == torch.sign(mu)) & (mu != 0)
        return weight * k.pow(2) / torch.where(agree, GINA_DISCOUNT, 1.0)
    return costs


@torch.no_grad()
def quantize_gina(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
                  targeted: bool = False, steps: int = 8, rounds: int = 2,
                  weight: Tensor | None = None, rival: str = "max") -> QuantizedImages:
    """GINA quantization (§8.4.4): the 12 lattices embedded one after the other (Wang et al. 2019's
    green-first order, CMD's sequential cost updates), with one gradient g at x_a.

    Reading of "each lattice contributes 1/12 of the initial classification loss": start from
    x_q = x0 (loss L0 > 0); after lattice j (1..12) the quantized image must reach
    L ≤ L0 (1 − j/12); after the last one it must satisfy the criterion. Each lattice has its own
    λ bracket search (``steps`` forwards) of the generic argmin (eq. 8.13) with the updated,
    asymmetric costs; where no λ reaches the target, the largest λ tried is kept. Images still not
    adversarial after the 12th lattice go through the lattices again (up to ``rounds`` sweeps),
    each lattice now aiming at the criterion, its changes re-solved with the costs updated from
    all the others; an image leaves as soon as it is adversarial.
    weight: quadratic weights (N, 3, H, W) of the base cost (default: MiPOD's 1/σ²).
    rival: ``max`` (default) the criterion as given; ``fixed`` (eq. 8.10) the loss l_{c0} − l_{ca}
    with c_a the class reached at x_a, for L0, the lattice targets and the final test (whether x0
    is already adversarial is still the criterion's). Forward passes: 1 + 12 · steps per sweep;
    gradients: 1.
    """
    x0 = _as_pixels(x0, 1.0).round()
    xa = _as_pixels(x_adv, 1.0).to(x0.device).clamp(0, 255)
    if x0.shape != xa.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_adv {tuple(xa.shape)} differ in shape")
    if steps < 1 or rounds < 1:
        raise ValueError("steps and rounds must be >= 1")
    if isinstance(y, Tensor):
        y = y.to(x0.device)
    n = x0.shape[0]
    weight = mipod_cost(x0) if weight is None else weight.to(x0.device, x0.dtype)
    masks = lattice_masks(tuple(x0.shape), x0.device)
    oracle = LossOracle(model, y, targeted, max_gradients=1, max_forwards=1 + len(masks) * steps)
    check_rival(rival, oracle)
    logits0 = oracle.logits(x0)
    start_adv = oracle.success(logits0)
    u = xa - x0
    low, high = admissible_bounds(u, df)
    _, grad, logits_a = oracle.loss_and_grad(xa)
    if rival == "fixed":
        hold_rival(oracle, logits_a)  # eq. 8.10: L0, the lattice targets and the last test use c_a
    loss0 = oracle.loss(logits0)
    k = torch.zeros_like(x0)
    success = start_adv.clone()
    lam_kept = torch.zeros(n, device=x0.device)
    k, success, lam_kept = _sweep(oracle, x0, k, grad, low, high, weight, loss0, masks, steps, success, lam_kept,
                                  first=True)
    for _ in range(rounds - 1):
        # later sweeps only for the images still unfooled, with an oracle of their own
        idx = (~success).nonzero()[:, 0]
        if len(idx) == 0:
            break
        sub = LossOracle(model, oracle.criterion.subset(idx), targeted, max_gradients=0,
                         max_forwards=len(masks) * steps)
        k_sub, ok_sub, lam_sub = _sweep(sub, x0[idx], k[idx], grad[idx], low[idx], high[idx], weight[idx],
                                        loss0[idx], masks, steps, success[idx], lam_kept[idx], first=False)
        k[idx], success[idx], lam_kept[idx] = k_sub, ok_sub, lam_sub
        oracle.forwards[idx] += sub.forwards
    xq = (x0 + k).clamp(0, 255)
    xq = torch.where(batch_view(start_adv), x0, xq)
    lam_kept = torch.where(start_adv, 0.0, torch.where(success, lam_kept, float("nan")))
    return _result(xq, x0, success, lam_kept, oracle)


def _sweep(oracle: LossOracle, x0: Tensor, k: Tensor, grad: Tensor, low: Tensor, high: Tensor, weight: Tensor,
           loss0: Tensor, masks: list[Tensor], steps: int, success: Tensor, lam_kept: Tensor,
           first: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One pass over the 12 lattices. First sweep: lattice j brings the loss to L0 (1 − j/12), the
    last one to the criterion; later sweeps: every lattice aims at the criterion. Images leave as
    soon as they are adversarial. Returns (k, success, λ)."""
    done = torch.zeros(x0.shape[1:], dtype=torch.bool, device=x0.device) if first else torch.stack(masks).any(0)
    for j, mask in enumerate(masks, start=1):
        active = ~success
        if not bool(active.any()):
            break
        last = not first or j == len(masks)
        target = loss0 * (1 - j / len(masks))
        mu = neighbour_mean(k, done & ~mask)
        k_lattice, lam, reached = _lattice_search(oracle, x0, k, grad, low, high, mask, gina_costs(weight, mu),
                                                  target, loss0.abs() / len(masks), last, steps, active)
        k = torch.where(batch_view(active) & mask, k_lattice, k)
        lam_kept = torch.where(active, lam, lam_kept)
        done |= mask
        if last:
            success = success | reached
    return k, success, lam_kept


def _lattice_search(oracle: LossOracle, x0: Tensor, k: Tensor, grad: Tensor, low: Tensor, high: Tensor,
                    mask: Tensor, costs, target: Tensor, gap: Tensor, last: bool, steps: int,
                    active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """λ search on one lattice: the smallest λ whose solution reaches ``target`` (the criterion on
    the last lattice). Returns the lattice's changes (N, 3, H, W), λ (N,) and whether reached (N,).

    The search starts at the λ whose unclipped quadratic minimizer −λg/(2w) lowers the linearized
    loss by ``gap`` (N,) on this lattice: λ = 2 gap / Σ_lattice g²/w."""
    w1 = torch.where(mask, costs(torch.ones_like(x0)), torch.ones_like(x0))
    g2 = (grad.pow(2) * mask / w1.clamp_min(1e-12)).flatten(1).sum(1)
    start = (2 * gap.clamp_min(1e-6) / g2).where(g2 > 0, torch.ones_like(g2))
    search = BracketSearch(start, grow=10.0)
    best_k = k.clone()
    best_lam = torch.full_like(start, float("nan"))
    largest = torch.zeros_like(start)
    k_largest = k.clone()
    reached = torch.zeros_like(active)
    for _ in range(steps):
        lam = search.value
        k_try = torch.where(mask, argmin_costs(x0, grad, low, high, lam, costs) - x0, k)
        logits = oracle.logits(x0 + k_try)
        ok = oracle.success(logits) if last else oracle.loss(logits) <= target
        better = ok & ~(lam >= best_lam)
        best_lam = torch.where(better, lam, best_lam)
        best_k = torch.where(batch_view(better), k_try, best_k)
        bigger = lam > largest
        largest = torch.where(bigger, lam, largest)
        k_largest = torch.where(batch_view(bigger), k_try, k_largest)
        reached |= ok
        search.update(ok)
    k_out = torch.where(batch_view(reached), best_k, k_largest)
    lam_out = torch.where(reached, best_lam, largest)
    return k_out, lam_out, reached & active


@register("gina", suffix=".png", gradients=1,
          description="Ch. 8 GINA: MiPOD costs over 12 lattices, green first, CMD updates (eq. 8.5); "
                      "quantizer steps are per lattice")
def gina(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
         targeted: bool = False, steps: int = 8) -> QuantizedImages:
    return quantize_gina(model, x0, x_adv, y, df=df, targeted=targeted, steps=steps)
