"""SurFree (Maho, Furon, Le Merrer, "SurFree: a fast surrogate-free black-box attack", CVPR 2021).

A decision-based L2 attack: it only sees the predicted label of each query. Following RoBIC
(thesis §6.4.1, §6.4.3), every queried image is quantized to integers in [0, 255] before it is
shown to the model, so every adversarial the attack keeps is a real, already verified image.

For black-box attacks ``steps`` counts label queries per image (one name per concept across the
attacks of the registry). The budget is a hard limit: :class:`LabelOracle` raises
:class:`~advimage.attacks.base.BudgetExceeded` before any image would exceed it.

Algorithm (paper §3, Alg. 1), per image, with ``x_o`` the original and ``x_b`` the best
adversarial point so far:

1. Initialisation: random noise around ``x_o`` until the label flips, then a binary search on
   the segment ``[x_o, x_b]`` (first probe at 80 % of the way, the reference code's "boost").
2. Direction: ``t`` a random ternary combination of low-frequency DCT atoms (the lower half of
   the zig-zag order), Gram-Schmidt orthogonalized against the last ``n_ortho`` directions and
   against ``u = (x_b - x_o) / ||x_b - x_o||``; ``v = t / ||t||``.
3. Polar search in the plane (u, v): the point at angle θ on the circle of diameter
   ``[x_o, x_b]`` is ``x(θ) = x_o + r cos θ (cos θ u + sin θ v)`` (paper eq. 5), so
   ``||x(θ) - x_o|| = r cos θ < r`` and any adversarial x(θ) improves the distortion.
   Sign search tests θ = ±(1 - k/T) θ_max (k = 0..T-1); on failure θ_max ← ρ θ_max and a new
   direction is drawn, on success θ_max ← θ_max / ρ. Then an upper bracket is found and a
   binary search on θ runs until ``|cos θ_lo - cos θ_hi| <= bs_gamma`` or ``bs_steps`` probes.
4. Final refinement: the last ``1 + bs_steps`` queries of the budget run a binary search on
   ``[x_o, x_b]`` towards the boundary.

Defaults follow the authors' example configuration (t-maho/SurFree config_example.json):
θ_max = 30°, ρ = 0.98, T = 1, 10 kept directions, 10 binary-search probes, γ = 0.01, full-image
DCT with the lower half of the zig-zag coefficients, no interpolation. Differences from that
code: queries are always quantized and counted (the initial noise trials too) and the budget
is per image; u is the current direction (the reference orthogonalizes against the first);
the θ bracket is verified by stepping θ_max/T until a probe fails (capped at 90°) instead of
assumed; the binary search on θ does not also probe -θ; the optional §3.4 interpolation is
not implemented; if noise finds no start, the nearest batch original with an adversarial label
is tried (and ``x_init`` may be given).

Batching: the images of a batch advance together, each in its own phase of the algorithm
(a per-image state machine whose state is held in tensors); every model call is one forward
over all still-active images, each contributing exactly one query. A batch of N images with a
budget of K queries therefore costs at most K forwards of at most N images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..criteria import label_criterion
from ..distortion import distortion
from ..oracle import BudgetExceeded, LabelOracle  # noqa: F401  (label-only queries are counted there)
from .base import AttackResult, check_inputs
from .registry import register

# per-image phases of the state machine
INIT, LINE, SIGN, UPPER, THETA, DONE = range(6)

_NOISE_STD = 127.5  # reference initialisation: x_o + 0.5 N(0, 1) in [0, 1] units

# Draw directions for every row and select, instead of asking the device which rows need one.
# None: only on CUDA (where a host sync stalls the queue); True/False forces it (tests).
SYNC_FREE: bool | None = None


def quantize(x: Tensor) -> Tensor:
    """Round float pixels to integers in [0, 255] (kept as float)."""
    return x.round().clamp_(0, 255)


def dct_matrix(n: int, device: torch.device | None = None) -> Tensor:
    """Orthonormal DCT-II matrix (n, n): row k is the k-th cosine atom."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.float().to(device)


def zigzag_mask(h: int, w: int, freq_range: tuple[float, float] = (0.0, 0.5),
                device: torch.device | None = None) -> Tensor:
    """(h, w) 0/1 mask keeping the DCT coefficients of rank in [lo, hi) * h * w, zig-zag order."""
    i = torch.arange(h)[:, None].expand(h, w)
    j = torch.arange(w)[None, :].expand(h, w)
    s = i + j
    key = s * (h + w) + torch.where(s % 2 == 1, i, j)  # anti-diagonals, alternating direction
    rank = torch.empty(h * w, dtype=torch.long)
    rank[key.flatten().argsort()] = torch.arange(h * w)
    lo, hi = int(h * w * max(0.0, freq_range[0])), int(h * w * min(1.0, freq_range[1]))
    keep = (rank >= lo) & (rank < max(hi, lo + 1))
    return keep.view(h, w).float().to(device)


class _SurFree:
    """One SurFree run on a batch; see the module docstring.

    Rows still being attacked form the working set ``ids``; every round queries all of them
    at once. The host only synchronises with the device while initialisation is pending and
    during the final refinement; the rest of the state machine runs on tensors.
    """

    _ROW_STATE = ("ids", "x0", "x_init", "start_idx", "phase", "final", "need_dir", "attempts", "count",
                  "trial", "t_lo", "theta_max", "lower", "upper", "r", "xb", "rb", "u", "v", "hist",
                  "hist_pos", "best", "best_d", "found")

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, steps: int, targeted: bool,
                 gen: torch.Generator, theta_max: float, rho: float, T: int, n_ortho: int,
                 bs_steps: int, bs_gamma: float, freq_range: tuple[float, float],
                 final_line_search: bool, init_attempts: int, x_init: Tensor | None) -> None:
        self.shape = x.shape
        _, _, h, w = x.shape
        self.dev, self.gen, self.steps, self.targeted = x.device, gen, steps, targeted
        self.T, self.rho, self.bs_steps, self.bs_gamma = T, rho, bs_steps, bs_gamma
        self.n_ortho, self.init_attempts = n_ortho, init_attempts
        self.theta0 = math.radians(theta_max)
        self.theta_cap = math.radians(89.0)
        self.reserve = (1 + bs_steps) if final_line_search else 0
        self.oracle = LabelOracle(model, y, targeted, max_queries=steps)
        self.x_all = x.detach().float().flatten(1)
        self.x_init_all = None if x_init is None else x_init.detach().float().flatten(1).to(self.dev)
        self.ch, self.cw = dct_matrix(h, self.dev), dct_matrix(w, self.dev)
        self.mask = zigzag_mask(h, w, freq_range, self.dev)

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
        m, d = ids.shape[0], self.x_all.shape[1]
        dev = self.dev
        self.ids = ids
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
        self.final = z(torch.bool)        # LINE phase is the final refinement
        self.need_dir = z(torch.bool)     # SIGN phase must draw a new direction
        self.attempts = z(torch.long)     # INIT attempts so far
        self.count = z(torch.long)        # probes in the current LINE / THETA search
        self.trial = z(torch.long)        # index in the sign search, 0..2T-1
        self.t_lo = z()                   # LINE: non-adversarial fraction of [x_o, x_b]
        self.theta_max = torch.full((m,), self.theta0, device=dev)
        self.lower = z()                  # adversarial angle (rad)
        self.upper = z()                  # non-adversarial angle (rad)
        self.r = z()                      # ||x_b - x_o|| when (u, v) was drawn
        self.xb = self.x0.clone()         # best continuous adversarial point
        self.rb = torch.full((m,), float("inf"), device=dev)
        self.u = torch.zeros_like(self.x0)
        self.v = torch.zeros_like(self.x0)
        self.hist = torch.zeros(m, self.n_ortho, d, device=dev)
        self.hist_pos = z(torch.long)
        self.best = self.x0.clone()       # best quantized adversarial actually queried
        self.best_d = torch.full((m,), float("inf"), device=dev)
        self.found = z(torch.bool)

    def _loop(self) -> None:
        init_pending = True
        while self.oracle.calls < self.steps:
            init_rows = None
            late = self.steps - self.oracle.calls <= self.reserve + 1
            if init_pending or late:  # host syncs only here
                done = self.phase == DONE
                if bool(done.any()):
                    self._compact(~done)
                    if self.ids.numel() == 0:
                        return
                if init_pending:
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

    def _flush(self) -> None:
        self.out_best[self.ids] = self.best
        self.out_d[self.ids] = self.best_d
        self.out_found[self.ids] = self.found

    # -- one round: one query per working row -------------------------------------------------
    def _round(self, init_rows: Tensor | None) -> None:
        theta, t = self._angle_probe(), self._line_probe()
        ph = self.phase
        circle = (ph == SIGN) | (ph == UPPER) | (ph == THETA)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # paper eq. 5: x(θ) = x_o + r cos θ (cos θ u + sin θ v);  line: x_o + t (x_b - x_o)
        a = torch.where(circle, self.r * cos * cos, 0.0).view(-1, 1)
        b = torch.where(circle, self.r * cos * sin, 0.0).view(-1, 1)
        c = torch.where(ph == LINE, t, 0.0).view(-1, 1)
        q = self.x0 + a * self.u + b * self.v + c * (self.xb - self.x0)
        if init_rows is not None:
            q[init_rows] = self._init_points(init_rows)
        q.clamp_(0, 255)
        counted = ph != DONE
        xi, adv, _ = self.oracle(q.view(-1, *self.shape[1:]), self.ids, counted)
        adv = adv & counted
        self._record(xi.flatten(1), adv)
        self._update(q, adv, theta, t)

    def _angle_probe(self) -> Tensor:
        """Angle each row probes in a circle phase (rad)."""
        k = (self.trial // 2).float()
        sgn = 1.0 - 2.0 * (self.trial % 2).float()
        sign_theta = sgn * (1.0 - k / self.T) * self.theta_max           # sign search ±(1 - k/T) θ_max
        upper_theta = self.lower + torch.sign(self.lower) * self.theta_max / self.T
        mid = 0.5 * (self.lower + self.upper)                             # binary search on θ
        return torch.where(self.phase == SIGN, sign_theta, torch.where(self.phase == UPPER, upper_theta, mid))

    def _line_probe(self) -> Tensor:
        # reference "boost": first probe at 80 % of [x_o, x_b], then bisection
        return self.t_lo + (1.0 - self.t_lo) * torch.where(self.count == 0, 0.8, 0.5)

    def _init_points(self, rows: Tensor) -> Tensor:
        """Starting candidates of attempt a: a = 0 Gaussian noise around x_o (reference init; or
        ``x_init``), a = 1 the nearest adversarial batch original (if any), then Gaussian and
        uniform noise alternately."""
        a = self.attempts[rows].view(-1, 1)
        x0 = self.x0[rows]
        gauss = x0 + _NOISE_STD * torch.randn(x0.shape, generator=self.gen, device=self.dev)
        unif = 255.0 * torch.rand(x0.shape, generator=self.gen, device=self.dev)
        out = torch.where(a % 2 == 1, unif, gauss)
        s = self.start_idx[rows]
        out = torch.where((a == 1) & (s >= 0).view(-1, 1), self.x_all[s.clamp_min(0)], out)
        if self.x_init is not None:
            out = torch.where(a == 0, self.x_init[rows], out)
        return out

    def _record(self, xi: Tensor, adv: Tensor) -> None:
        d = (xi - self.x0).norm(dim=1)
        better = adv & (d < self.best_d)
        self.best_d = torch.where(better, d, self.best_d)
        self.best = torch.where(better.view(-1, 1), xi, self.best)
        self.found |= adv

    def _update(self, q: Tensor, adv: Tensor, theta: Tensor, t: Tensor) -> None:
        ph = self.phase
        init, line = ph == INIT, ph == LINE
        sign, upper, thet = ph == SIGN, ph == UPPER, ph == THETA

        # x_b: the closest continuous point whose quantization was adversarial
        dq = (q - self.x0).norm(dim=1)
        take = adv & (init | line | (dq < self.rb))
        self.xb = torch.where(take.view(-1, 1), q, self.xb)
        self.rb = torch.where(take, dq, self.rb)

        # INIT: first adversarial -> binary search on [x_o, x_b]
        self.attempts = self.attempts + init.long()
        new_line = init & adv
        self.phase = torch.where(new_line, LINE, self.phase)
        self.t_lo = torch.where(new_line, 0.0, self.t_lo)
        self.count = torch.where(new_line, 0, self.count)
        self.phase = torch.where(init & ~adv & (self.attempts >= self.init_attempts), DONE, self.phase)

        # LINE: x_b moved onto the probe, so rescale the non-adversarial fraction to the new segment
        self.t_lo = torch.where(line & adv, self.t_lo / t.clamp_min(1e-12),
                                torch.where(line, t, self.t_lo))
        self.count = torch.where(line, self.count + 1, self.count)
        line_end = line & (self.count >= 1 + self.bs_steps)
        self.phase = torch.where(line_end & self.final, DONE, self.phase)
        to_sign = line_end & ~self.final
        self.phase = torch.where(to_sign, SIGN, self.phase)
        self.need_dir = self.need_dir | to_sign

        # SIGN: success -> θ_max / ρ and bracket; failure -> next trial, after 2T: θ_max ρ, new v
        ok = sign & adv
        first = (self.trial // 2) == 0
        prev_tested = theta + torch.sign(theta) * self.theta_max / self.T  # tested, not adversarial
        self.lower = torch.where(ok, theta, self.lower)
        self.upper = torch.where(ok & ~first, prev_tested, self.upper)
        self.phase = torch.where(ok, torch.where(first, UPPER, THETA), self.phase)
        self.count = torch.where(ok, 0, self.count)
        self.theta_max = torch.where(ok, (self.theta_max / self.rho).clamp(max=self.theta_cap), self.theta_max)
        fail = sign & ~adv
        self.trial = torch.where(fail, self.trial + 1, self.trial)
        exhausted = fail & (self.trial >= 2 * self.T)
        self.theta_max = torch.where(exhausted, self.theta_max * self.rho, self.theta_max)
        self.need_dir = self.need_dir | exhausted

        # UPPER: step by θ_max / T while adversarial, then the bracket is found
        self.lower = torch.where(upper & adv, theta, self.lower)
        up_done = upper & ~adv
        self.upper = torch.where(up_done, theta, self.upper)
        self.phase = torch.where(up_done, THETA, self.phase)
        self.count = torch.where(up_done, 0, self.count)

        # THETA: bisection on the angle
        self.lower = torch.where(thet & adv, theta, self.lower)
        self.upper = torch.where(thet & ~adv, theta, self.upper)
        self.count = torch.where(thet, self.count + 1, self.count)
        self._settle()

    def _settle(self) -> None:
        """Transitions that need no query, so that every working row has a probe to ask."""
        half_pi = math.pi / 2
        # UPPER whose next step reaches 90° (x(90°) = x_o, not adversarial): bracket with 90°
        nxt = self.lower + torch.sign(self.lower) * self.theta_max / self.T
        cap = (self.phase == UPPER) & (nxt.abs() >= half_pi)
        self.upper = torch.where(cap, torch.sign(self.lower) * half_pi, self.upper)
        self.phase = torch.where(cap, THETA, self.phase)
        self.count = torch.where(cap, 0, self.count)
        # THETA done: precision bs_gamma on the distance ratio cos θ (reference criterion)
        conv = (self.phase == THETA) & ((self.count >= self.bs_steps)
                                        | ((torch.cos(self.lower) - torch.cos(self.upper)).abs() <= self.bs_gamma))
        self.phase = torch.where(conv, SIGN, self.phase)
        self.need_dir = self.need_dir | conv
        remaining = self.steps - self.oracle.calls  # same for every working row
        if self.reserve and remaining <= self.reserve:
            # final refinement: the last 1 + bs_steps queries bisect [x_o, x_b]
            circ = (self.phase == SIGN) | (self.phase == UPPER) | (self.phase == THETA)
            self.phase = torch.where(circ, LINE, self.phase)
            self.t_lo = torch.where(circ, 0.0, self.t_lo)
            self.count = torch.where(circ, 0, self.count)
            self.final = self.final | (self.phase == LINE)
        elif remaining > 0:
            self._new_directions((self.phase == SIGN) & self.need_dir)

    def _new_directions(self, need: Tensor) -> None:
        """Draw v where ``need`` (paper §3.2): a random ternary mix of low-frequency DCT atoms,
        Gram-Schmidt against the last n_ortho directions and u = (x_b - x_o)/||x_b - x_o||.
        On a GPU every row draws and ``need`` selects, so the host never waits on the device;
        elsewhere only the rows in need draw."""
        rows: Tensor | slice = slice(None)
        if not (self.dev.type == "cuda" if SYNC_FREE is None else SYNC_FREE):
            idx = need.nonzero().squeeze(1)
            if idx.numel() == 0:
                return
            if idx.numel() < need.shape[0]:
                rows = idx
        sel = need[rows]
        m = sel.shape[0]
        _, c, h, w = self.shape
        coeff = torch.randint(0, 3, (m, c, h, w), generator=self.gen, device=self.dev, dtype=torch.float32) - 1.0
        t = (self.ch.T @ (coeff * self.mask) @ self.cw).flatten(1)  # inverse orthonormal 2-D DCT
        rb = self.rb[rows]
        u = (self.xb[rows] - self.x0[rows]) / rb.clamp_min(1e-12).view(-1, 1)
        if self.n_ortho:  # Gram-Schmidt against the (orthonormal) past directions ...
            hist = self.hist[rows]
            coef = torch.bmm(hist, t.unsqueeze(2)).transpose(1, 2)  # (m, 1, L)
            t = t - torch.bmm(coef, hist).squeeze(1)
        t = t - (t * u).sum(1, keepdim=True) * u  # ... and u, last so that v ⟂ u exactly
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.n_ortho:
            ridx = torch.arange(need.shape[0], device=self.dev)[rows]
            slot = self.hist_pos[rows] % self.n_ortho
            h_new = t if not isinstance(rows, slice) else torch.where(sel.view(-1, 1), t, self.hist[ridx, slot])
            self.hist[ridx, slot] = h_new
            self.hist_pos[rows] += sel.long()
        if isinstance(rows, slice):  # every row drew: keep the old state where not in need
            s2 = sel.view(-1, 1)
            u, t, rb = torch.where(s2, u, self.u), torch.where(s2, t, self.v), torch.where(sel, rb, self.r)
        self.u[rows], self.v[rows], self.r[rows] = u, t, rb
        self.trial = torch.where(need, 0, self.trial)
        self.need_dir = self.need_dir & ~need


@register("surfree", black_box=True, budget="queries")
def surfree(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 5000, targeted: bool = False,
            seed: int = 0, batch_size: int | None = None, theta_max: float = 30.0, rho: float = 0.98,
            T: int = 1, n_ortho: int = 10, bs_steps: int = 10, bs_gamma: float = 0.01,
            freq_range: tuple[float, float] = (0.0, 0.5), final_line_search: bool = True,
            init_attempts: int = 100, x_init: Tensor | None = None) -> AttackResult:
    """SurFree, decision-based L2; ``steps`` is the label-query budget per image (hard limit).

    Every query is quantized to integers in [0, 255]; ``x_adv`` is the closest adversarial
    image actually queried (integer-valued, verified by the model). The images of a batch are
    attacked together, one forward per round over the images still being attacked;
    ``batch_size`` splits the batch into chunks attacked one after the other (bounds memory;
    the random draws then depend on the chunking).

    theta_max: initial θ_max, degrees. rho: θ_max ← ρ θ_max after a failed direction and
    θ_max / ρ after a success. T: sign-search trials per sign. n_ortho: past directions kept
    for the Gram-Schmidt orthogonalization. bs_steps: probes per binary search. bs_gamma: the
    θ search stops when |cos θ_lo - cos θ_hi| <= bs_gamma. freq_range: the zig-zag fraction
    of DCT coefficients the directions use. final_line_search: keep the last 1 + bs_steps
    queries for a binary search on [x_o, x_b]. init_attempts: random starts tried before
    giving up. x_init: optional (N, 3, H, W) adversarial starting points (useful if targeted).
    Deterministic given ``seed``.
    """
    check_inputs(x, y)
    if steps < 1:
        raise ValueError(f"steps (query budget per image) must be >= 1, got {steps}")
    if T < 1 or not 0 < rho <= 1 or not 0 < theta_max < 90 or bs_steps < 1 or n_ortho < 0 or init_attempts < 1:
        raise ValueError("need T >= 1, 0 < rho <= 1, 0 < theta_max < 90 (degrees), bs_steps >= 1, "
                         "n_ortho >= 0, init_attempts >= 1")
    if x_init is not None and x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    crit = label_criterion(y, targeted, "surfree")  # decision-based: needs class labels
    y, targeted = crit.labels.to(x.device).long(), crit.targeted
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    n = x.shape[0]
    bs = max(n, 1) if batch_size is None else batch_size
    outs = []
    for s in range(0, n, bs):
        sl = slice(s, s + bs)
        run = _SurFree(model, x[sl], y[sl], steps, targeted, gen, theta_max, rho, T, n_ortho, bs_steps,
                       bs_gamma, tuple(freq_range),  # type: ignore[arg-type]  # a list from JSON is a pair too
                       final_line_search, init_attempts,
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
