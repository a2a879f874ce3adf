"""TtBA ("TtBA: Two-third Bridge Approach for Decision-Based Attack", 2025; code BUPTAIOC/TtBA).

A decision-based (hard-label) L2 attack: it only sees the predicted label of each query. As for
SurFree and CGBA in this package (thesis §6.4.1, §6.4.3), every queried image is quantized to
integers in [0, 255] before the model sees it, and ``steps`` is a hard budget of label queries per
image, counted by :class:`~advimage.oracle.LabelOracle`.

Algorithm (read from the authors' ``TtBA.py``, method ``TtBA`` and ``attack``; the paper's full
text was not at hand, only its summary), per image, with ``x_o`` the original, ``x_b`` the current
boundary point (adversarial, its rounding verified) and ``r = ||x_b - x_o||``, iteration i:

1. Initialisation: a random adversarial start, then a binary search on ``[x_o, x_adv]`` until the
   bracket is shorter than ``tol`` (the authors' ``bin_search_fast``).
2. Normal estimation at ``x_b``: ``q_i = floor(N0 sqrt(i + 1))`` probes ``x_b + δ u_j`` with
   ``u_j`` random unit directions in the low-frequency DCT block (the first ``H/f x W/f``
   coefficients of each channel); the normal is ``η = Σ_j s_j u_j`` with ``s_j = ±1`` whether the
   probe is adversarial (the authors' ``normal_vector_approximation``), ``n = η / ||η||``.
3. Bridge direction: with ``v = (x_b - x_o) / r``, ``d(k) = (k n + (1 - k) v) / ||k n + (1 - k) v||``
   (the authors' ``get_attempt_unit_v``). ``k_bridge``: a bisection on k in [0, 1] of the probes
   ``x_o + r d(k)`` at the current radius, adversarial -> the lower end moves up, until the bracket
   is shorter than ``bridge_tol`` (10 probes at 1e-3): the largest weight whose direction still
   reaches the adversarial side at radius r, where ``d(k)`` "bridges" back to the boundary.
4. Two-third rule: ``k = (2/3) k_bridge`` (the paper's central observation) for
   ``k_bridge >= 0.2``; ``k = 0.9 k_bridge`` for ``k_bridge <= 0.1``, linear in between (the
   authors' ``JUMP`` / ``DIVE`` constants). Then a binary search on ``[x_o, x_o + r d(k)]``; its
   adversarial end is the next ``x_b``, and step 2 follows.

Defaults follow the authors' code: N0 = 30, bridge tolerance 1e-3, ratio 2/3, f = 4 for images
at least 224 pixels wide and f = 1 (the full image space) below. Differences from that code (see
docs/architecture.md): the authors' probe size σ = 3e-4 and precision 1e-4 (normalized units)
are far below a pixel quantum, so ``sigma`` (probe length, eq. 6.2 units) and ``tol`` take
CGBA's values here (1.0 and 0.002); queries are quantized and counted per image; η subtracts the
mean sign (as in :mod:`.cgba`: a boundary point known only to a quantum would otherwise bias η);
full-space probes are Gaussian (the authors' are uniform in [-1, 1]); a bridge search without any
adversarial probe goes straight to a new normal estimation (the authors' line search on
``[x_o, x_b]`` would only find ``x_b`` again); a line search whose end is not adversarial keeps
``x_b``; the start is the one of :mod:`.cgba` (SurFree's noise, uniform images, the nearest
adversarial batch original, or ``x_init``) instead of the authors' growing noise; the search ends
at the budget, not after a number of iterations. Not implemented: the paper's remedy for local
optima in narrow adversarial regions (targeted attacks), which the authors' public code does not
contain.

Batching and seeding as :mod:`.cgba` (whose per-image state machine this class extends): one
query per still-active image per forward, and each image draws from its own generators, so its
attack does not depend on the other images of its batch (except when it starts from a batch
original).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..criteria import label_criterion
from ..distortion import distortion
from .base import AttackResult, check_inputs
from .cgba import _CGBA, DONE, GRAD, INIT, LINE, SCAN, image_seeds
from .registry import register

BRIDGE = SCAN  # the phase of the bisection on k (CGBA's scan slot)

# the authors' piecewise rule around the two-third ratio (TtBA.py: low, JUMP, high, DIVE)
_LOW, _JUMP, _HIGH = 0.10, 0.9, 0.20


def bridge_weight(k_bridge: Tensor, ratio: float = 2.0 / 3.0) -> Tensor:
    """The weight k of the next direction from k_bridge: ``ratio * k_bridge`` above 0.2 (TtBA's
    two-third rule), ``0.9 k_bridge`` below 0.1, linear in between (continuous)."""
    slope = (ratio * _HIGH - _JUMP * _LOW) / (_HIGH - _LOW)
    mid = slope * (k_bridge - _LOW) + _JUMP * _LOW
    return torch.where(k_bridge <= _LOW, _JUMP * k_bridge, torch.where(k_bridge >= _HIGH, ratio * k_bridge, mid))


def default_dim_reduction(width: int) -> int:
    """The authors' f: 4 for images at least 224 pixels wide, else 1 (full image space)."""
    return 4 if width >= 224 else 1


class _TtBA(_CGBA):
    """One TtBA run on a batch. Reuses CGBA's state: ``v`` the unit ``(x_b - x_o) / r``, ``w`` the
    unit normal n, ``lo`` / ``hi`` the bracket of k in the BRIDGE phase."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, steps: int, targeted: bool, seeds: list[int],
                 dim_reduction: int, initial_queries: int, sigma: float, tol: float, bridge_tol: float,
                 ratio: float, bs_steps: int, init_attempts: int, x_init: Tensor | None) -> None:
        super().__init__(model, x, y, steps, targeted, seeds, "ttba", dim_reduction, initial_queries, sigma, tol,
                         bs_steps, 1, init_attempts, x_init)
        self.bridge_tol, self.ratio = bridge_tol, ratio

    def _bridge_dirs(self, k: Tensor) -> Tensor:
        """d(k) = unit(k n + (1 - k) v), one per row (TtBA.py get_attempt_unit_v)."""
        d = torch.addcmul(k.view(-1, 1) * self.w, (1.0 - k).view(-1, 1), self.v)
        return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _round(self, init_rows: Tensor | None) -> None:
        ph = self.phase
        u = self._directions()  # every row draws every round: its stream depends on itself only
        kmid = 0.5 * (self.lo + self.hi)
        t = 0.5 * (self.t_lo + self.t_hi)
        # bridge probe: x_o + r d(k);  line: x_o + t (x_e - x_o);  normal probe: x_b + δ u
        a = torch.where(ph == BRIDGE, self.rb, 0.0).view(-1, 1)
        c = torch.where(ph == LINE, t, 0.0).view(-1, 1)
        g = (ph == GRAD).float().view(-1, 1)
        q = torch.addcmul(self.x0, a, self._bridge_dirs(kmid)).addcmul_(c, self.xe - self.x0)
        q.addcmul_(g, self.xb - self.x0).addcmul_(g * self.delta, u)
        if init_rows is not None:
            q[init_rows] = self._init_points(init_rows)
        q.clamp_(0, 255)
        counted = ph != DONE
        xi, adv, _ = self.oracle(q.view(-1, *self.shape[1:]), self.ids, counted)
        adv = adv & counted
        self._record(xi.flatten(1), adv)
        self._step(q, adv, u, kmid, t)

    def _step(self, q: Tensor, adv: Tensor, u: Tensor, kmid: Tensor, t: Tensor) -> None:
        ph = self.phase
        init, line, grad, bridge = ph == INIT, ph == LINE, ph == GRAD, ph == BRIDGE
        col = lambda m: m.view(-1, 1)  # noqa: E731

        # INIT: the first adversarial candidate -> binary search on [x_o, x_e]
        self.attempts = self.attempts + init.long()
        to_line = init & adv
        self.phase = torch.where(init & ~adv & (self.attempts >= self.init_attempts), DONE, self.phase)

        # LINE: bisection on t (authors' bin_search_fast); x_a its last adversarial probe
        self.t_hi = torch.where(line & adv, t, self.t_hi)
        self.t_lo = torch.where(line & ~adv, t, self.t_lo)
        self.count = self.count + line.long()
        line_end = line & (((self.t_hi - self.t_lo) * self.re <= self.tol) | (self.count >= self.bs_steps))
        self.xa = torch.where(col(adv & (init | line)), q, self.xa)

        # GRAD: accumulate the signed probes (normal_vector_approximation)
        s = torch.where(adv, 1.0, -1.0)
        gm = grad.float()
        self.acc_su.addcmul_(col(gm * s), u)
        self.acc_u.addcmul_(col(gm), u)
        self.acc_s = self.acc_s + gm * s
        self.j = self.j + grad.long()
        grad_end = grad & (self.j >= self.q_target)

        # BRIDGE: bisection on k at radius r (TtBA.py TtBA(): adversarial -> L = mid, else R = mid)
        self.lo = torch.where(bridge & adv, kmid, self.lo)
        self.hi = torch.where(bridge & ~adv, kmid, self.hi)
        bridge_end = bridge & ((self.hi - self.lo) <= self.bridge_tol)
        found_k = bridge_end & (self.lo > 0)  # k_bridge = lo; none adversarial: a new normal instead

        # INIT -> LINE on [x_o, x_adv]
        if self._any(to_line):
            self.xe = torch.where(col(to_line), q, self.xe)
        # BRIDGE -> LINE on [x_o, x_o + r d(k)], k from the two-third rule; x_b if its end is clean
        if self._any(found_k):
            k = bridge_weight(self.lo, self.ratio)
            end = (self.x0 + self.rb.view(-1, 1) * self._bridge_dirs(k)).clamp_(0, 255)
            self.xe = torch.where(col(found_k), end, self.xe)
            self.xa = torch.where(col(found_k), self.xb, self.xa)
        new_line = to_line | found_k
        self.re = torch.where(new_line, (self.xe - self.x0).norm(dim=1), self.re)
        self.t_lo = torch.where(new_line, 0.0, self.t_lo)
        self.t_hi = torch.where(new_line, 1.0, self.t_hi)
        self.count = torch.where(new_line, 0, self.count)
        self.phase = torch.where(new_line, LINE, self.phase)

        # a line search ended: its last adversarial point is the new x_b; a bridge search without
        # an adversarial probe keeps x_b; both go on with a normal estimation
        search_end = line_end | (bridge_end & ~found_k)
        if self._any(line_end):
            self.xb = torch.where(col(line_end), self.xa, self.xb)
            self.rb = torch.where(line_end, (self.xb - self.x0).norm(dim=1), self.rb)
        if self._any(search_end):
            self._start_grad(search_end)
        if self._any(grad_end):
            self._start_bridge(grad_end)

    def _start_bridge(self, rows: Tensor) -> None:
        """Rows ``rows`` finished a normal estimation: n, v, then the bisection on k in [0, 1]."""
        col = rows.view(-1, 1)
        j = self.j.clamp_min(1).float()
        mean_s = self.acc_s / j
        one_sided = mean_s.abs() >= 1.0  # all probes on one side: no baseline (it would cancel η)
        eta = self.acc_su - torch.where(one_sided, 0.0, mean_s).view(-1, 1) * self.acc_u
        n = eta / eta.norm(dim=1, keepdim=True).clamp_min(1e-12)
        v = (self.xb - self.x0) / self.rb.clamp_min(1e-12).view(-1, 1)
        self.v = torch.where(col, v, self.v)
        self.w = torch.where(col, n, self.w)
        self.it = self.it + rows.long()
        self.phase = torch.where(rows, BRIDGE, self.phase)
        self.lo = torch.where(rows, 0.0, self.lo)
        self.hi = torch.where(rows, 1.0, self.hi)


_PARAMS_DOC = """
    dim_reduction: f, the normal is estimated in the first H/f x W/f DCT coefficients of each
    channel (1: the full image space; None: the authors' 4 for images at least 224 wide, else 1).
    initial_queries: N0, iteration i spends floor(N0 sqrt(i+1)) queries on the normal. sigma: probe
    length ||δ u|| / sqrt(n), eq. (6.2) units. tol: a line search stops when its bracket is shorter
    than tol (eq. 6.2 units) or after bs_steps probes. bridge_tol: the bisection on the bridge
    weight k stops when its bracket is shorter than this (10 probes at 1e-3). ratio: the next
    weight is ratio * k_bridge (TtBA's two-third). init_attempts: random starts tried before giving
    up. x_init: optional (N, 3, H, W) adversarial starting points (useful if targeted: the authors
    start from a target-class image). batch_size: chunks attacked one after the other (the results
    do not depend on it). Deterministic given ``seed``.
"""


@register("ttba", black_box=True, budget="queries")
def ttba(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 5000, targeted: bool = False, seed: int = 0,
         batch_size: int | None = None, dim_reduction: int | None = None, initial_queries: int = 30,
         sigma: float = 1.0, tol: float = 0.002, bridge_tol: float = 1e-3, ratio: float = 2.0 / 3.0,
         bs_steps: int = 20, init_attempts: int = 100, x_init: Tensor | None = None) -> AttackResult:
    """TtBA (two-third bridge direction between the perturbation and the estimated normal),
    decision-based L2; ``steps`` label queries per image.

    Every query is quantized to integers in [0, 255]; ``x_adv`` is the closest adversarial image
    actually queried (integer-valued, verified by the model).
    """
    check_inputs(x, y)
    if steps < 1:
        raise ValueError(f"steps (query budget per image) must be >= 1, got {steps}")
    if dim_reduction is None:
        dim_reduction = default_dim_reduction(x.shape[-1])
    if int(dim_reduction) != dim_reduction or dim_reduction < 1:
        raise ValueError(f"dim_reduction must be an integer >= 1 (1: full image space) or None, got {dim_reduction}")
    if initial_queries < 1 or bs_steps < 1 or init_attempts < 1:
        raise ValueError("need initial_queries >= 1, bs_steps >= 1, init_attempts >= 1")
    if not (math.isfinite(sigma) and sigma > 0 and math.isfinite(tol) and tol > 0):
        raise ValueError(f"sigma and tol must be finite and > 0 (eq. 6.2 units), got {sigma}, {tol}")
    if not (0 < bridge_tol < 0.5):
        raise ValueError(f"bridge_tol must be in (0, 0.5), got {bridge_tol}")
    if not (0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if x_init is not None and x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    crit = label_criterion(y, targeted, "ttba")  # decision-based: needs class labels
    y, targeted = crit.labels.to(x.device).long(), crit.targeted
    seeds = image_seeds(x, seed)
    n = x.shape[0]
    bs = max(n, 1) if batch_size is None else batch_size
    outs = []
    for s in range(0, n, bs):
        sl = slice(s, s + bs)
        run = _TtBA(model, x[sl], y[sl], steps, targeted, seeds[sl], int(dim_reduction), initial_queries,
                    float(sigma), float(tol), float(bridge_tol), float(ratio), bs_steps, init_attempts,
                    None if x_init is None else x_init[sl])
        outs.append(run.run())
    if outs:
        best, found, queries = (torch.cat(z) for z in zip(*outs))
    else:
        best, found, queries = x.flatten(1), torch.zeros(0, dtype=torch.bool, device=x.device), \
            torch.zeros(0, dtype=torch.long, device=x.device)
    x_adv = torch.where(found.view(-1, 1), best, x.flatten(1).float()).view(x.shape).to(x.dtype)
    d = torch.where(found, distortion(x_adv, x).to(x.device), 0.0)
    zeros = torch.zeros_like(queries)
    return AttackResult(x_adv=x_adv, success=found, distortion=d, gradients=zeros, forwards=zeros.clone(),
                        queries=queries)


ttba.__doc__ = (ttba.__doc__ or "") + _PARAMS_DOC
