"""A decision-based baseline: foolbox's HopSkipJump (Chen, Jordan, Wainwright, S&P 2020), L2.

Registered as ``"hsj"`` on the common contract. ``steps`` is the label-query budget per image,
as for :func:`~advimage.attacks.surfree.surfree`. Foolbox runs in [0, 1] (bounds (0, 1));
a small wrapper multiplies by 255 before the model and counts every forward as one query for
each image of the batch it carries (foolbox always queries the whole batch). The wrapper stops
the attack before the budget is spent, keeping ``final_checks`` queries to round the best
adversarial to integers and re-check it: HopSkipJump ends on the boundary, so the rounded
image is also tried a little farther out along ``x_adv - x`` (scales ``final_scales``) and the
smallest scale whose integer image is adversarial is kept.

HopSkipJump itself works on continuous pixels (its queries are not quantized: its gradient
estimate probes at sub-quantum distances), unlike SurFree in this package.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..criteria import label_criterion
from ..distortion import distortion
from .base import AttackResult, BudgetExceeded, check_inputs
from .registry import register


class _Stop(Exception):
    """Raised inside the model wrapper to end foolbox's run when the budget is reached."""


class _CountingModel(nn.Module):
    """[0, 1] -> model(255 x); counts queries per image and keeps the closest adversarial seen."""

    def __init__(self, model: nn.Module, x0: Tensor, y: Tensor, targeted: bool, limit: int) -> None:
        super().__init__()
        self.model, self.targeted, self.limit = model, targeted, limit
        self.x0 = x0.flatten(1).float()
        self.y = y
        n = x0.shape[0]
        self.queries = torch.zeros(n, dtype=torch.long, device=x0.device)
        self.best = self.x0.clone()
        self.best_d = torch.full((n,), float("inf"), device=x0.device)
        self.ids = torch.arange(n, device=x0.device)  # images foolbox is attacking, in its batch order

    def forward(self, x01: Tensor) -> Tensor:
        if x01.shape[0] != self.ids.shape[0]:
            raise RuntimeError(f"unexpected foolbox batch of {x01.shape[0]} for {self.ids.shape[0]} images")
        if int(self.queries[self.ids].max()) + 1 > self.limit:
            raise _Stop
        self.queries[self.ids] += 1
        x = x01.float() * 255.0
        logits = self.model(x)
        pred = logits.argmax(1)
        y = self.y[self.ids]
        adv = (pred == y) if self.targeted else (pred != y)
        flat = x.detach().flatten(1)
        d = (flat - self.x0[self.ids]).norm(dim=1)
        better = adv & (d < self.best_d[self.ids])
        self.best_d[self.ids] = torch.where(better, d, self.best_d[self.ids])
        self.best[self.ids] = torch.where(better[:, None], flat, self.best[self.ids])
        return logits


@register("hsj", black_box=True, budget="queries")
def hsj(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 5000, targeted: bool = False,
        seed: int = 0, batch_size: int | None = None, gradient_evals: int = 100,
        max_gradient_evals: int = 10_000, init_steps: int = 50, init_directions: int = 100,
        final_scales: tuple[float, ...] = (1.0, 1.05, 1.15, 1.3, 1.6)) -> AttackResult:
    """HopSkipJump (foolbox, L2), ``steps`` label queries per image, integer-valued result.

    gradient_evals / max_gradient_evals: foolbox's initial / max gradient-estimation queries
    per iteration. init_steps / init_directions: its LinearSearchBlendedUniformNoise start.
    final_scales: scales of ``x_adv - x`` tried, rounded, at the end (one query each).
    Deterministic given ``seed`` (foolbox draws from torch's global RNG, forked here).
    """
    try:
        import foolbox as fb
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'hsj' baseline needs foolbox: pip install foolbox") from e
    check_inputs(x, y)
    if steps < 1:
        raise ValueError(f"steps (query budget per image) must be >= 1, got {steps}")
    if not final_scales or min(final_scales) < 1.0:
        raise ValueError("final_scales must be a non-empty tuple of scales >= 1")
    n = x.shape[0]
    crit = label_criterion(y, targeted, "hsj")  # decision-based: needs class labels
    y, targeted = crit.labels.to(x.device).long(), crit.targeted
    bs = max(n, 1) if batch_size is None else batch_size
    parts = []
    for s in range(0, n, bs):
        parts.append(_hsj_chunk(fb, model, x[s:s + bs], y[s:s + bs], steps, targeted, seed,
                                gradient_evals, max_gradient_evals, init_steps, init_directions,
                                tuple(final_scales)))
    if not parts:
        z = torch.zeros(0, dtype=torch.long, device=x.device)
        return AttackResult(x_adv=x.clone(), success=z.bool(), distortion=z.float(), gradients=z,
                            forwards=z.clone(), queries=z.clone())
    x_adv, success, queries = (torch.cat(t) for t in zip(*parts))
    d = torch.where(success, distortion(x_adv, x).to(x.device), 0.0)
    zeros = torch.zeros_like(queries)
    return AttackResult(x_adv=x_adv, success=success, distortion=d, gradients=zeros, forwards=zeros.clone(),
                        queries=queries)


@torch.no_grad()
def _hsj_chunk(fb, model, x, y, steps, targeted, seed, gradient_evals, max_gradient_evals,
               init_steps, init_directions, final_scales):
    reserve = len(final_scales)
    wrapper = _CountingModel(model, x, y, targeted, limit=steps)
    x0 = x.detach().float().flatten(1)
    # query 1: the originals (already-misclassified images are done)
    logits = wrapper(x.float() / 255.0)
    adv0 = (logits.argmax(1) == y) if targeted else (logits.argmax(1) != y)
    remaining = steps - 1 - reserve
    todo = (~adv0).nonzero().squeeze(1)
    if todo.numel() and remaining > 0:
        wrapper.limit = 1 + remaining
        wrapper.ids = todo
        wrapper.training = False  # the wrapper only (foolbox checks it); the model's mode is the caller's
        fmodel = fb.PyTorchModel(wrapper, bounds=(0, 1), device=x.device)
        xs = (x[todo].float() / 255.0).contiguous()
        crit = fb.criteria.TargetedMisclassification(y[todo]) if targeted else fb.criteria.Misclassification(y[todo])
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            try:
                init = fb.attacks.LinearSearchBlendedUniformNoiseAttack(directions=init_directions, steps=init_steps)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    starts = init.run(fmodel, xs, crit)
                ok = wrapper.best_d[todo] < float("inf")
                if bool(ok.any()):
                    wrapper.ids = todo[ok]
                    xs_ok = xs[ok]
                    crit = (fb.criteria.TargetedMisclassification(y[wrapper.ids]) if targeted
                            else fb.criteria.Misclassification(y[wrapper.ids]))
                    attack = fb.attacks.HopSkipJumpAttack(steps=10 ** 6, initial_gradient_eval_steps=gradient_evals,
                                                          max_gradient_eval_steps=max_gradient_evals,
                                                          constraint="l2")
                    attack.run(fmodel, xs_ok, crit, starting_points=starts[ok])
            except _Stop:
                pass
    # round the best adversarial seen, re-check (one query per scale, batched over images)
    found = wrapper.best_d < float("inf")
    x_adv = x0.clone()
    success = adv0.clone()
    x_adv[adv0] = x0[adv0].round().clamp(0, 255)
    pending = found & ~adv0
    wrapper.limit = steps
    for scale in final_scales:
        ids = pending.nonzero().squeeze(1)
        if ids.numel() == 0:
            break
        cand = (x0[ids] + scale * (wrapper.best[ids] - x0[ids])).round().clamp(0, 255)
        wrapper.ids = ids
        pred = model(cand.view(-1, *x.shape[1:])).argmax(1)  # counted below, outside foolbox
        wrapper.queries[ids] += 1
        ok = (pred == y[ids]) if targeted else (pred != y[ids])
        x_adv[ids[ok]] = cand[ok]
        success[ids[ok]] = True
        pending[ids[ok]] = False
    if bool((wrapper.queries > steps).any()):
        raise BudgetExceeded(f"hsj used more than {steps} queries on an image")
    return x_adv.view(x.shape).to(x.dtype), success, wrapper.queries
