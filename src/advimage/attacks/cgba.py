"""CGBA and CGBA-H (Reza, Rahmati, Wu, Dai, "CGBA: Curvature-aware Geometric Black-box Attack", ICCV 2023).

Decision-based L2 attacks: they only see the predicted label of each query. As for SurFree in this
package (thesis §6.4.1, §6.4.3), every queried image is quantized to integers in [0, 255] before
the model sees it, and ``steps`` is a hard budget of label queries per image, counted by
:class:`~advimage.oracle.LabelOracle`.

Algorithm (read from the authors' code, Farhamdur/CGBA ``proposed_attack.py``; the paper's text was
not at hand, so the names below are the code's), per image, with ``x_o`` the original and ``x_b``
the current boundary point (adversarial, its rounding verified):

1. Initialisation: random noise around ``x_o`` until the label flips, then a binary search on the
   segment ``[x_o, x_adv]`` until the bracket is shorter than ``tol`` (the authors' ``bin_search``).
2. Normal estimation at ``x_b`` (as GeoDA and HopSkipJump): ``q_i = floor(N0 sqrt(i + 1))`` probes
   ``x_b + δ u_j`` at iteration ``i``, with ``u_j`` unit random directions in the low-frequency DCT
   block (the first ``H/f × W/f`` coefficients of each channel, ``f = dim_reduction``); the normal
   is ``η = Σ_j (s_j - s̄) u_j`` with ``s_j = ±1`` whether the probe is adversarial.
3. The plane (v, w) with ``v = (x_b - x_o)/r``, ``r = ||x_b - x_o||`` and ``w`` the unit part of
   ``η`` orthogonal to ``v``; ``θ`` the angle between ``η`` and ``v``. The point at angle β on the
   semicircle of diameter ``[x_o, x_b]`` is ``p(β) = x_o + r cos β (cos β v + sin β w)`` (the
   authors' ``x_s + ζ (ζ·(x_b - x_s))`` with ζ at angle β from v): ``||p(β) - x_o|| = r cos β``.

   - **CGBA** (semicircular boundary search, non-targeted): probe ``β_k = (π/2)(1 - 2^-k)``,
     k = 1, 2, ... while adversarial (the authors' ``go_to_boundary_CGBA``); the first
     non-adversarial β_k and the last adversarial angle bracket the boundary on the semicircle,
     found by bisection on β (``SemiCircular_boundary_search``) until the chord ``r sin Δβ`` is
     shorter than ``tol``.
   - **CGBA-H** (high boundary curvature, targeted): probe ``β_k = θ / 2^k``, k = 1, 2, ... until
     adversarial (``go_to_boundary_CGBA_H``), then a binary search on ``[x_o, p(β_k)]``.

   The last adversarial point of the search is the next ``x_b``; step 2 follows.

Defaults follow the authors' code: f = 4, N0 = 30, at most 40 probes per semicircle scan. The
authors' probe size σ = 2e-4 and precision 1e-4 (normalized units) are far below one pixel
quantum: with integer queries such probes would all round to the same image. Here ``sigma`` is
the probe length and ``tol`` the precision in eq. (6.2) units (RMS per pixel), defaults chosen on
EfficientNet-Lite0 and a linear model (docs/architecture.md). Other differences from that code:
queries are quantized and counted per image (the initial noise too); η subtracts the mean sign
(HopSkipJump's baseline, which the authors' code does not), so that a boundary point off by a
quantum still gives a direction; the CGBA bisection starts from the last adversarial β_k, not
from β = 0; a scan that reaches its cap keeps its last adversarial point (CGBA) or ``x_b``
(CGBA-H); the search ends at the budget, not after a number of iterations; the initial noise is
SurFree's (std 127.5 then uniform images, the nearest batch original with an adversarial label at
the eleventh attempt, or ``x_init``) instead of the authors' growing-std loop.

Batching: the images of a batch advance together, each in its own phase (a per-image state machine
held in tensors); every model call is one forward over the still-active images, one query each,
so N images with a budget of K cost at most K forwards of at most N images. Each image draws its
random numbers from its own generators, seeded from ``seed`` and the image's pixels: an image's
attack does not depend on the other images of its batch (for a model whose outputs do not depend
on the batch), except when it starts from a batch original.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor, nn

from ..criteria import label_criterion
from ..distortion import distortion
from ..oracle import LabelOracle
from .base import AttackResult, check_inputs
from .registry import register
from .surfree import dct_matrix

# per-image phases of the state machine
INIT, LINE, GRAD, SCAN, BISECT, DONE = range(6)

VARIANTS = ("cgba", "cgba_h")
_NOISE_STD = 127.5   # SurFree's start: x_o + 0.5 N(0, 1) in [0, 1] units
_BATCH_START = 10    # the init attempt that tries the nearest adversarial batch original

# Update every row's state in every round, instead of asking the device which rows changed phase.
# None: only on CUDA (where a host sync stalls the queue); True/False forces it (tests).
SYNC_FREE: bool | None = None


def image_seeds(x: Tensor, seed: int) -> list[int]:
    """One seed per image (N,) from ``seed`` and a CRC-32 of its float32 pixels."""
    flat = x.detach().float().flatten(1).cpu().numpy()
    return [(int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(row.tobytes())) % (2 ** 63) for row in flat]


class _CGBA:
    """One CGBA / CGBA-H run on a batch; see the module docstring.

    Rows still being attacked form the working set (``ids`` on the device, ``rows`` the same
    indices on the host); every round queries all of them at once. The host only synchronises
    with the device while some initialisation is pending.
    """

    _ROW_STATE = ("ids", "x0", "x_init", "start_idx", "phase", "attempts", "count", "it", "k", "j", "q_target",
                  "t_lo", "t_hi", "re", "lo", "hi", "theta", "xb", "rb", "xe", "xa", "v", "w",
                  "acc_su", "acc_u", "acc_s", "best", "best_d", "found")

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, steps: int, targeted: bool, seeds: list[int],
                 variant: str, dim_reduction: int, initial_queries: int, sigma: float, tol: float,
                 bs_steps: int, max_scan: int, init_attempts: int, x_init: Tensor | None) -> None:
        self.shape = x.shape
        _, c, h, w = x.shape
        d = c * h * w
        self.dev, self.steps, self.targeted, self.variant = x.device, steps, targeted, variant
        self.n0, self.bs_steps, self.max_scan, self.init_attempts = initial_queries, bs_steps, max_scan, init_attempts
        self.delta = sigma * math.sqrt(d)   # probe length, L2 pixel units
        self.tol = tol * math.sqrt(d)       # bracket length that ends a binary search, L2 pixel units
        self.oracle = LabelOracle(model, y, targeted, max_queries=steps)
        self.sync_free = self.dev.type == "cuda" if SYNC_FREE is None else SYNC_FREE
        self.x_all = x.detach().float().flatten(1)
        self.x_init_all = None if x_init is None else x_init.detach().float().flatten(1).to(self.dev)
        # low-frequency block: the first H/f x W/f orthonormal DCT atoms (authors' find_random)
        self.ch = dct_matrix(h, self.dev)[: max(1, h // dim_reduction)]
        self.cw = dct_matrix(w, self.dev)[: max(1, w // dim_reduction)]
        self.gen_dir = [torch.Generator(device=self.dev) for _ in seeds]   # normal-estimation probes
        self.gen_init = [torch.Generator(device=self.dev) for _ in seeds]  # starting noise
        for s, gd, gi in zip(seeds, self.gen_dir, self.gen_init):
            gd.manual_seed(s)
            gi.manual_seed((s + 1) % (2 ** 63))

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> tuple[Tensor, Tensor, Tensor]:
        n = self.x_all.shape[0]
        all_ids = torch.arange(n, device=self.dev)
        # round 0: the originals; already-misclassified images are done with distortion 0
        xi, adv, pred0 = self.oracle(self.x_all.view(self.shape), all_ids)
        xi = xi.flatten(1)
        self.out_found = adv.clone()
        self.out_best = torch.where(adv.view(-1, 1), xi, self.x_all)
        self.out_d = torch.where(adv, (xi - self.x_all).norm(dim=1), float("inf"))
        ids = (~adv).nonzero().squeeze(1)
        if ids.numel() and self.steps > 1:
            self._start(ids, pred0)
            self._loop()
            self._flush()
        self.oracle.check()
        return self.out_best, self.out_found, self.oracle.queries

    def _start(self, ids: Tensor, pred0: Tensor) -> None:
        m, dev = ids.shape[0], self.dev
        self.ids, self.rows = ids, ids.tolist()
        self.x0 = self.x_all[ids]
        self.x_init = None if self.x_init_all is None else self.x_init_all[ids]
        # fallback start: the nearest batch original whose (queried) label is adversarial for this row
        y = self.oracle.y
        valid = (pred0[None, :] == y[ids][:, None]) if self.targeted else (pred0[None, :] != y[ids][:, None])
        dist = torch.cdist(self.x0, self.x_all).masked_fill(~valid, float("inf"))
        near = dist.argmin(1)
        self.start_idx = torch.where(torch.isfinite(dist.gather(1, near[:, None]).squeeze(1)), near, -1)
        z = lambda dtype=torch.float32: torch.zeros(m, dtype=dtype, device=dev)  # noqa: E731
        self.phase = torch.full((m,), INIT, dtype=torch.long, device=dev)
        self.attempts = z(torch.long)  # INIT attempts so far
        self.count = z(torch.long)     # probes in the current LINE / SCAN / BISECT search
        self.it = z(torch.long)        # normal estimations done (the paper's iteration i)
        self.k = z(torch.long)         # SCAN: index of the probed angle β_k, from 1
        self.j = z(torch.long)         # GRAD: probes done
        self.q_target = z(torch.long)  # GRAD: probes of this estimation, floor(N0 sqrt(i + 1))
        self.t_lo, self.t_hi, self.re = z(), z(), z()  # LINE: bracket fractions of [x_o, x_e], ||x_e - x_o||
        self.lo, self.hi, self.theta = z(), z(), z()   # circle: adversarial / clean angle, angle(η, v)
        self.xb = self.x0.clone()                       # boundary point x_b
        self.rb = torch.full((m,), float("inf"), device=dev)
        self.xe = self.x0.clone()                       # LINE: adversarial end of the segment
        self.xa = self.x0.clone()                       # last adversarial point of the current search
        self.v = torch.zeros_like(self.x0)
        self.w = torch.zeros_like(self.x0)
        self.acc_su = torch.zeros_like(self.x0)        # Σ s_j u_j
        self.acc_u = torch.zeros_like(self.x0)         # Σ u_j
        self.acc_s = z()                                # Σ s_j
        self.best = self.x0.clone()                     # best quantized adversarial actually queried
        self.best_d = torch.full((m,), float("inf"), device=dev)
        self.found = z(torch.bool)

    def _loop(self) -> None:
        init_pending = True
        while self.oracle.calls < self.steps:
            init_rows = None
            if init_pending:  # host syncs only here
                done = self.phase == DONE
                if bool(done.any()):
                    self._compact(~done)
                    if not self.rows:
                        return
                init_rows = (self.phase == INIT).nonzero().squeeze(1)
                init_pending = init_rows.numel() > 0
                if not init_pending:
                    init_rows = None
            self._round(init_rows)

    def _compact(self, keep: Tensor) -> None:
        self._flush()
        for name in self._ROW_STATE:
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t[keep])
        self.rows = [r for r, k in zip(self.rows, keep.tolist()) if k]

    def _flush(self) -> None:
        self.out_best[self.ids] = self.best
        self.out_d[self.ids] = self.best_d
        self.out_found[self.ids] = self.found

    def _any(self, mask: Tensor) -> bool:
        """Whether rows of ``mask`` need an update; always True when sync-free (no host sync)."""
        return self.sync_free or bool(mask.any())

    # -- one round: one query per working row -------------------------------------------------
    def _round(self, init_rows: Tensor | None) -> None:
        ph = self.phase
        u = self._directions()  # every row draws every round: its stream depends on itself only
        beta = self._angle_probe()
        t = 0.5 * (self.t_lo + self.t_hi)
        circle = (ph == SCAN) | (ph == BISECT)
        cos, sin = torch.cos(beta), torch.sin(beta)
        # p(β) = x_o + r cos β (cos β v + sin β w);  line: x_o + t (x_e - x_o);  probe: x_b + δ u
        a = torch.where(circle, self.rb * cos * cos, 0.0).view(-1, 1)
        b = torch.where(circle, self.rb * cos * sin, 0.0).view(-1, 1)
        c = torch.where(ph == LINE, t, 0.0).view(-1, 1)
        g = (ph == GRAD).float().view(-1, 1)
        q = torch.addcmul(self.x0, a, self.v).addcmul_(b, self.w).addcmul_(c, self.xe - self.x0)
        q.addcmul_(g, self.xb - self.x0).addcmul_(g * self.delta, u)
        if init_rows is not None:
            q[init_rows] = self._init_points(init_rows)
        q.clamp_(0, 255)
        counted = ph != DONE
        xi, adv, _ = self.oracle(q.view(-1, *self.shape[1:]), self.ids, counted)
        adv = adv & counted
        self._record(xi.flatten(1), adv)
        self._update(q, adv, u, beta, t)

    def _directions(self) -> Tensor:
        """(m, d) unit directions of the low-frequency DCT block, one per working row."""
        c = self.shape[1]
        kh, kw = self.ch.shape[0], self.cw.shape[0]
        zc = torch.stack([torch.randn(c, kh, kw, generator=self.gen_dir[r], device=self.dev) for r in self.rows])
        u = (self.ch.T @ zc @ self.cw).flatten(1)  # inverse orthonormal 2-D DCT: ||u|| = ||zc||
        return u / zc.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _angle_probe(self) -> Tensor:
        """Angle β (rad) each row probes in a circle phase."""
        half = torch.pow(0.5, self.k.float())
        if self.variant == "cgba":
            scan = 0.5 * math.pi * (1.0 - half)   # authors' go_to_boundary_CGBA: β_k = (π/2)(1 - 2^-k)
        else:
            scan = self.theta * half              # go_to_boundary_CGBA_H: β_k = θ / 2^k
        return torch.where(self.phase == SCAN, scan, 0.5 * (self.lo + self.hi))

    def _init_points(self, rows: Tensor) -> Tensor:
        """Starting candidates of attempt a: Gaussian noise around x_o (even a; ``x_init`` at a = 0
        if given) or a uniform random image (odd a); the nearest adversarial batch original at
        a = 10 if there is one."""
        a = self.attempts[rows].view(-1, 1)
        x0 = self.x0[rows]
        d = x0.shape[1]
        idx = rows.tolist()
        gens = [self.gen_init[self.rows[i]] for i in idx]
        gauss = x0 + _NOISE_STD * torch.stack([torch.randn(d, generator=g, device=self.dev) for g in gens])
        unif = 255.0 * torch.stack([torch.rand(d, generator=g, device=self.dev) for g in gens])
        out = torch.where(a % 2 == 1, unif, gauss)
        s = self.start_idx[rows]
        out = torch.where((a == _BATCH_START) & (s >= 0).view(-1, 1), self.x_all[s.clamp_min(0)], out)
        if self.x_init is not None:
            out = torch.where(a == 0, self.x_init[rows], out)
        return out

    def _record(self, xi: Tensor, adv: Tensor) -> None:
        d = (xi - self.x0).norm(dim=1)
        better = adv & (d < self.best_d)
        self.best_d = torch.where(better, d, self.best_d)
        self.best = torch.where(better.view(-1, 1), xi, self.best)
        self.found |= adv

    def _update(self, q: Tensor, adv: Tensor, u: Tensor, beta: Tensor, t: Tensor) -> None:
        ph = self.phase
        init, line, grad, scan, bis = ph == INIT, ph == LINE, ph == GRAD, ph == SCAN, ph == BISECT
        col = lambda m: m.view(-1, 1)  # noqa: E731

        # INIT: the first adversarial candidate -> binary search on [x_o, x_e]
        self.attempts = self.attempts + init.long()
        to_line = init & adv
        self.phase = torch.where(init & ~adv & (self.attempts >= self.init_attempts), DONE, self.phase)

        # LINE: bisection on t (authors' bin_search), x_a the adversarial end
        self.t_hi = torch.where(line & adv, t, self.t_hi)
        self.t_lo = torch.where(line & ~adv, t, self.t_lo)
        self.count = self.count + line.long()
        line_end = line & (((self.t_hi - self.t_lo) * self.re <= self.tol) | (self.count >= self.bs_steps))

        # GRAD: accumulate the signed probes (Monte-Carlo normal, GeoDA / HopSkipJump)
        s = torch.where(adv, 1.0, -1.0)
        gm = grad.float()
        self.acc_su.addcmul_(col(gm * s), u)
        self.acc_u.addcmul_(col(gm), u)
        self.acc_s = self.acc_s + gm * s
        self.j = self.j + grad.long()
        grad_end = grad & (self.j >= self.q_target)

        # SCAN and BISECT on the semicircle
        scan_ok, scan_no = scan & adv, scan & ~adv
        self.count = self.count + (scan | bis).long()
        # x_a: the last adversarial point of a search (line, semicircle, or a new segment's end)
        self.xa = torch.where(col(adv & ~grad), q, self.xa)
        if self.variant == "cgba":
            # adversarial: go on towards x_o; clean: bracket [last adversarial, β_k] -> bisection
            self.lo = torch.where(scan_ok, beta, self.lo)
            self.hi = torch.where(scan_no, beta, self.hi)
            self.k = self.k + scan_ok.long()
            to_bisect = scan_no
            to_line_h = torch.zeros_like(scan)
            scan_cap = scan_ok & (self.k > self.max_scan)
        else:
            # clean: halve the angle towards x_b; adversarial: binary search on [x_o, p(β_k)]
            self.k = self.k + scan_no.long()
            to_bisect = torch.zeros_like(scan)
            to_line_h = scan_ok
            scan_cap = scan_no & (self.k > self.max_scan)
        self.lo = torch.where(bis & adv, beta, self.lo)
        self.hi = torch.where(bis & ~adv, beta, self.hi)
        bis_end = bis & (((self.rb * torch.sin(self.hi - self.lo)) <= self.tol) | (self.count >= self.bs_steps))

        # transitions
        new_line = to_line | to_line_h
        if self._any(new_line):
            self.xe = torch.where(col(new_line), q, self.xe)
        self.re = torch.where(new_line, (q - self.x0).norm(dim=1), self.re)
        self.t_lo = torch.where(new_line, 0.0, self.t_lo)
        self.t_hi = torch.where(new_line, 1.0, self.t_hi)
        self.count = torch.where(new_line | to_bisect, 0, self.count)
        self.phase = torch.where(new_line, LINE, self.phase)
        self.phase = torch.where(to_bisect, BISECT, self.phase)

        # a search ended: its last adversarial point is the new x_b, then a normal estimation
        search_end = line_end | bis_end | scan_cap
        if self._any(search_end):
            self.xb = torch.where(col(search_end), self.xa, self.xb)
            self.rb = torch.where(search_end, (self.xb - self.x0).norm(dim=1), self.rb)
            self._start_grad(search_end)
        if self._any(grad_end):
            self._start_scan(grad_end)

    def _start_grad(self, rows: Tensor) -> None:
        """Rows ``rows`` start normal estimation i = ``it``: floor(N0 sqrt(i + 1)) probes (authors' q_opt)."""
        col = rows.view(-1, 1)
        self.phase = torch.where(rows, GRAD, self.phase)
        self.j = torch.where(rows, 0, self.j)
        q = torch.floor(self.n0 * torch.sqrt(self.it.double() + 1.0)).long().clamp_min(1)
        self.q_target = torch.where(rows, q, self.q_target)
        self.acc_su = torch.where(col, 0.0, self.acc_su)
        self.acc_u = torch.where(col, 0.0, self.acc_u)
        self.acc_s = torch.where(rows, 0.0, self.acc_s)

    def _start_scan(self, rows: Tensor) -> None:
        """Rows ``rows`` finished a normal estimation: η, the plane (v, w), θ, then the scan."""
        col = rows.view(-1, 1)
        j = self.j.clamp_min(1).float()
        mean_s = self.acc_s / j
        one_sided = mean_s.abs() >= 1.0  # all probes on one side: no baseline (it would cancel η)
        eta = self.acc_su - torch.where(one_sided, 0.0, mean_s).view(-1, 1) * self.acc_u
        v = (self.xb - self.x0) / self.rb.clamp_min(1e-12).view(-1, 1)
        cos_t = (eta * v).sum(1)
        w = eta - cos_t.view(-1, 1) * v
        sin_t = w.norm(dim=1)
        w = w / sin_t.clamp_min(1e-12).view(-1, 1)
        self.v = torch.where(col, v, self.v)
        self.w = torch.where(col, w, self.w)
        self.theta = torch.where(rows, torch.atan2(sin_t, cos_t), self.theta)
        self.it = self.it + rows.long()
        self.phase = torch.where(rows, SCAN, self.phase)
        self.k = torch.where(rows, 1, self.k)
        self.count = torch.where(rows, 0, self.count)
        self.lo = torch.where(rows, 0.0, self.lo)
        self.hi = torch.where(rows, 0.5 * math.pi, self.hi)
        self.xa = torch.where(col, self.xb, self.xa)


def _run(variant: str, model: nn.Module, x: Tensor, y: Tensor, steps: int, targeted: bool, seed: int,
         batch_size: int | None, dim_reduction: int, initial_queries: int, sigma: float, tol: float,
         bs_steps: int, max_scan: int, init_attempts: int, x_init: Tensor | None) -> AttackResult:
    check_inputs(x, y)
    if steps < 1:
        raise ValueError(f"steps (query budget per image) must be >= 1, got {steps}")
    if int(dim_reduction) != dim_reduction or dim_reduction < 1:
        raise ValueError(f"dim_reduction must be an integer >= 1 (1: full image space), got {dim_reduction}")
    if initial_queries < 1 or bs_steps < 1 or max_scan < 1 or init_attempts < 1:
        raise ValueError("need initial_queries >= 1, bs_steps >= 1, max_scan >= 1, init_attempts >= 1")
    if not (math.isfinite(sigma) and sigma > 0 and math.isfinite(tol) and tol > 0):
        raise ValueError(f"sigma and tol must be finite and > 0 (eq. 6.2 units), got {sigma}, {tol}")
    if x_init is not None and x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    crit = label_criterion(y, targeted, variant)  # decision-based: needs class labels
    y, targeted = crit.labels.to(x.device).long(), crit.targeted
    seeds = image_seeds(x, seed)
    n = x.shape[0]
    bs = max(n, 1) if batch_size is None else batch_size
    outs = []
    for s in range(0, n, bs):
        sl = slice(s, s + bs)
        run = _CGBA(model, x[sl], y[sl], steps, targeted, seeds[sl], variant, int(dim_reduction), initial_queries,
                    float(sigma), float(tol), bs_steps, max_scan, init_attempts,
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


_PARAMS_DOC = """
    dim_reduction: f, the normal is estimated in the first H/f x W/f DCT coefficients of each
    channel (1: the full image space). initial_queries: N0, iteration i spends floor(N0 sqrt(i+1))
    queries on the normal. sigma: probe length ||δ u|| / sqrt(n), eq. (6.2) units. tol: a binary
    search stops when its bracket is shorter than tol (eq. 6.2 units) or after bs_steps probes.
    max_scan: probes of one semicircle scan before it gives up. init_attempts: random starts tried
    before giving up. x_init: optional (N, 3, H, W) adversarial starting points (useful if
    targeted). batch_size: chunks attacked one after the other (bounds memory; the results do not
    depend on it, see the module docstring). Deterministic given ``seed``.
"""


@register("cgba", black_box=True, budget="queries")
def cgba(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 5000, targeted: bool = False, seed: int = 0,
         batch_size: int | None = None, dim_reduction: int = 4, initial_queries: int = 30, sigma: float = 1.0,
         tol: float = 0.002, bs_steps: int = 20, max_scan: int = 40, init_attempts: int = 100,
         x_init: Tensor | None = None) -> AttackResult:
    """CGBA (semicircular boundary search), decision-based L2; ``steps`` label queries per image.

    Every query is quantized to integers in [0, 255]; ``x_adv`` is the closest adversarial image
    actually queried (integer-valued, verified by the model).
    """
    return _run("cgba", model, x, y, steps, targeted, seed, batch_size, dim_reduction, initial_queries, sigma,
                tol, bs_steps, max_scan, init_attempts, x_init)


@register("cgba_h", black_box=True, budget="queries",
          reference="CGBA-H (Reza, Rahmati, Wu, Dai, \"CGBA: Curvature-aware Geometric Black-box Attack\", "
                    "ICCV 2023): the variant for boundaries of high curvature.")
def cgba_h(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 5000, targeted: bool = False, seed: int = 0,
           batch_size: int | None = None, dim_reduction: int = 4, initial_queries: int = 30, sigma: float = 1.0,
           tol: float = 0.002, bs_steps: int = 20, max_scan: int = 40, init_attempts: int = 100,
           x_init: Tensor | None = None) -> AttackResult:
    """CGBA-H (halving search from the normal's angle, then a line search), decision-based L2;
    ``steps`` label queries per image; integer-valued, verified ``x_adv`` as for :func:`cgba`.
    """
    return _run("cgba_h", model, x, y, steps, targeted, seed, batch_size, dim_reduction, initial_queries, sigma,
                tol, bs_steps, max_scan, init_attempts, x_init)


cgba.__doc__ = (cgba.__doc__ or "") + _PARAMS_DOC
cgba_h.__doc__ = (cgba_h.__doc__ or "") + _PARAMS_DOC
