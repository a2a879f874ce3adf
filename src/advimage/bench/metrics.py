"""Robustness metrics of RoBIC (thesis ch. 6.2.4 and 6.3).

Per image ``i`` of a test set we know the distortion ``d_i`` of its adversarial example
(eq. 6.2, pixel units in [0, 255]), whether the attack succeeded, and whether the original
was already misclassified. Its *effective distortion* is 0 when the original is misclassified
(already adversarial), ``d_i`` when the attack succeeded, and ``inf`` when it failed.

- operating curve (eq. 6.3): ``P(d) = #{i : e_i <= d} / N``; accuracy ``eta(d) = 1 - P(d)``;
- exponential model (eq. 6.4): ``eta(d) ~ eta(0) exp(-lambda d)``;
- half-distortion (eq. 6.5): ``d_1/2 = ln 2 / lambda``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_BUDGETS: tuple[float, ...] = (0.5, 1.0, 2.0)


def effective_distortion(distortion: ArrayLike, success: ArrayLike,
                         misclassified: ArrayLike | None = None) -> np.ndarray:
    """Effective distortion (N,) float64: 0 if misclassified, d if success, inf if failed.

    distortion: (N,) eq. (6.2) in pixel units; ignored (may be NaN) where the attack failed
        or the original is misclassified. success: (N,) bool. misclassified: (N,) bool or None
        (all originals correct).
    """
    d = np.asarray(distortion, dtype=np.float64).reshape(-1)
    s = np.asarray(success).reshape(-1)
    if s.dtype != np.bool_:
        s = s.astype(np.float64)
        if np.isnan(s).any() or not np.isin(s, (0.0, 1.0)).all():
            raise ValueError("success must hold booleans (or 0/1)")
        s = s.astype(bool)
    m = (np.zeros(d.shape, dtype=bool) if misclassified is None
         else np.asarray(misclassified).reshape(-1).astype(bool))
    if not (d.shape == s.shape == m.shape):
        raise ValueError(f"distortion, success and misclassified must have the same length, "
                         f"got {d.shape[0]}, {s.shape[0]}, {m.shape[0]}")
    if d.size == 0:
        raise ValueError("no images: the operating curve of an empty set is undefined")
    used = s & ~m
    bad = used & ~(np.isfinite(d) & (d >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"successful attack with invalid distortion {d[i]!r} at index {i} "
                         "(must be finite and >= 0)")
    return np.where(m, 0.0, np.where(s, d, np.inf))


@dataclass(frozen=True)
class OperatingCurve:
    """Operating curve P(d) (eq. 6.3) sampled on an increasing grid, right-continuous steps.

    d: (K,) float64 distortions in pixel units, increasing, ``d[0] == 0``.
    p: (K,) float64 fraction of the N images fooled at distortion <= d (misclassified
        originals count at 0, failed attacks never).
    effective: (N,) float64 effective distortion per image (``inf`` where the attack failed).
    """

    d: np.ndarray
    p: np.ndarray
    effective: np.ndarray

    @property
    def eta(self) -> np.ndarray:
        """Accuracy function (K,) ``eta(d) = 1 - P(d)``."""
        return 1.0 - self.p

    @property
    def n_images(self) -> int:
        return int(self.effective.size)

    @property
    def accuracy(self) -> float:
        """Clean accuracy ``eta(0)``."""
        return float(1.0 - np.mean(self.effective <= 0.0))

    def __call__(self, d: ArrayLike) -> np.ndarray:
        """P at arbitrary distortions (any shape), exact from the per-image values."""
        q = np.asarray(d, dtype=np.float64)
        srt = np.sort(self.effective)
        return np.searchsorted(srt, q, side="right") / srt.size


def operating_curve(distortion: ArrayLike, success: ArrayLike,
                    misclassified: ArrayLike | None = None, *,
                    grid: ArrayLike | None = None) -> OperatingCurve:
    """Operating curve (eq. 6.3) from per-image records, see :func:`effective_distortion`.

    grid: (K,) distortions at which to sample P; default: 0 and every finite effective
        distortion (the curve's breakpoints, so the steps are exact).
    """
    e = effective_distortion(distortion, success, misclassified)
    if grid is None:
        g = np.unique(np.concatenate([[0.0], e[np.isfinite(e)]]))
    else:
        g = np.asarray(grid, dtype=np.float64).reshape(-1)
        if g.size == 0 or not np.all(np.isfinite(g)) or np.any(np.diff(g) <= 0) or g[0] < 0:
            raise ValueError("grid must be a non-empty, finite, strictly increasing array >= 0")
    srt = np.sort(e)
    p = np.searchsorted(srt, g, side="right") / srt.size
    return OperatingCurve(d=g, p=p.astype(np.float64), effective=e)


def curve_from_rows(rows: Iterable[Mapping[str, Any]], *,
                    grid: ArrayLike | None = None) -> OperatingCurve:
    """Operating curve from result-store rows (dicts with label, prediction, success, distortion).

    A row is misclassified when ``prediction != label`` (prediction on the original). Rows
    with a non-empty ``error`` are skipped (they carry no measurement).
    """
    rs = [r for r in rows if not r.get("error")]
    if not rs:
        raise ValueError("no rows without error: the operating curve of an empty set is undefined")
    d = [np.nan if r.get("distortion") is None else float(r["distortion"]) for r in rs]
    s = [bool(r.get("success")) for r in rs]
    m = [r.get("prediction") is not None and r.get("label") is not None
         and int(r["prediction"]) != int(r["label"]) for r in rs]
    return operating_curve(d, s, m, grid=grid)


def unquantized_curve_from_rows(rows: Iterable[Mapping[str, Any]]) -> OperatingCurve | None:
    """Operating curve of a white-box attack's float output, before quantization (thesis Fig. 6.1).

    Uses ``extra["attack_distortion"]`` and ``extra["attack_success"]`` of the attacked rows
    (misclassified originals count at 0 as usual). These floats are not images: the curve only
    shows what quantization costs, it is never a robustness figure. None for rows that were not
    quantized (``quantizer`` empty or ``"none"``, e.g. black-box attacks whose queries are
    already integer images), when an attacked row lacks the extras, or when every row is an error.
    """
    rs = [r for r in rows if not r.get("error")]
    if not rs or any((r.get("quantizer") or "none") == "none" for r in rs):
        return None
    d, s, m = [], [], []
    for r in rs:
        mis = (r.get("prediction") is not None and r.get("label") is not None
               and int(r["prediction"]) != int(r["label"]))
        extra = r.get("extra") or {}
        if not mis and ("attack_distortion" not in extra or "attack_success" not in extra):
            return None
        dist = None if mis else extra["attack_distortion"]
        d.append(np.nan if dist is None else float(dist))
        s.append(dist is not None and bool(extra["attack_success"]))
        m.append(mis)
    try:
        return operating_curve(d, s, m)
    except ValueError:  # a success without a valid distortion: no reference curve
        return None


AMPLITUDES: tuple[str, ...] = ("pinned", "fitted")
GRIDS: tuple[str, ...] = ("breakpoints", "uniform")
UNIFORM_POINTS = 200


@dataclass(frozen=True)
class ExponentialFit:
    """Least-squares fit of eq. (6.4) to a curve: ``eta(d) = eta0 exp(-lam d)``.

    eta0: the model's amplitude: the measured clean accuracy when ``amplitude == "pinned"``
    (not fitted), the least-squares value when ``"fitted"``. lam: decay rate per pixel unit.
    d_half: ``ln 2 / lam`` (eq. 6.5), pixel units. r2: coefficient of determination of the
    fit on the samples it was fitted to (``grid``). amplitude, grid: the conventions used (see
    :func:`fit_exponential`). accuracy: the measured eta(0) (equal to eta0 when pinned).
    n_samples: number of (d, eta) samples fitted.
    """

    eta0: float
    lam: float
    d_half: float
    r2: float
    amplitude: str = "pinned"
    grid: str = "breakpoints"
    accuracy: float = float("nan")
    n_samples: int = 0

    def __call__(self, d: ArrayLike) -> np.ndarray:
        """Model accuracy eta(d), same shape as d."""
        return self.eta0 * np.exp(-self.lam * np.asarray(d, dtype=np.float64))

    @property
    def d_half_crossing(self) -> float:
        """Distortion where the fitted model reaches half the *measured* accuracy, eta(0)/2.

        Equal to ``d_half`` when the amplitude is pinned; ``ln(2 eta0 / eta(0)) / lam`` otherwise
        (``nan`` when undefined, e.g. lam = 0).
        """
        if self.amplitude == "pinned" or not (self.accuracy > 0):
            return self.d_half
        if not (self.lam > 0 and self.eta0 > 0):
            return float("nan")
        return math.log(2.0 * self.eta0 / self.accuracy) / self.lam


def fit_samples(curve: OperatingCurve, grid: str = "breakpoints",
                n_points: int = UNIFORM_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The (d, eta) samples a fit uses: ``(K,), (K,)`` float64.

    grid: ``"breakpoints"``: the curve's own samples ``(curve.d, curve.eta)`` (by default 0 and
        one point per distinct image distortion, so the samples cluster where images do);
        ``"uniform"``: ``n_points`` equally spaced distortions from 0 to the largest finite
        effective distortion, eta read exactly from the per-image values (``1 - curve(d)``).
    """
    if grid == "breakpoints":
        return curve.d, curve.eta
    if grid == "uniform":
        fin = curve.effective[np.isfinite(curve.effective)]
        top = float(fin.max()) if fin.size else 0.0
        if not top > 0:
            raise ValueError("no finite distortion > 0: a uniform grid of d is undefined")
        if n_points < 2:
            raise ValueError(f"a uniform grid needs n_points >= 2, got {n_points}")
        d = np.linspace(0.0, top, int(n_points))
        return d, 1.0 - curve(d)
    raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")


def fit_exponential(curve: OperatingCurve, *, amplitude: str = "pinned", grid: str = "breakpoints",
                    n_points: int = UNIFORM_POINTS) -> ExponentialFit:
    """Fit ``eta(d) = eta0 exp(-lam d)`` (eq. 6.4) by least squares.

    The default (``amplitude="pinned", grid="breakpoints"``) is RoBIC's: ``eta0`` is the
    measured accuracy eta(0) and only ``lam >= 0`` is fitted, on the curve's samples. The other
    conventions show how much d_1/2 and R^2 depend on these choices:

    amplitude: ``"pinned"`` (eta0 = eta(0)) or ``"fitted"`` (eta0 >= 0 fitted with lam).
    grid: ``"breakpoints"`` (the curve's samples) or ``"uniform"`` (``n_points`` distortions
        from 0 to the largest finite one), see :func:`fit_samples`. R^2 is computed on the
        same samples.

    lam is initialised by a log-linear fit and refined by scipy's ``curve_fit``. Raises
    ValueError for an unknown convention, when eta(0) == 0 (nothing left to attack) or when
    no correctly classified image was fooled (lam = 0, d_1/2 infinite).
    """
    from scipy.optimize import curve_fit, minimize_scalar

    if amplitude not in AMPLITUDES:
        raise ValueError(f"unknown amplitude {amplitude!r}; valid: {', '.join(AMPLITUDES)}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    acc = curve.accuracy
    if acc <= 0.0:
        raise ValueError("accuracy eta(0) is 0: every original is misclassified, so no attack "
                         "was needed and d_1/2 is undefined")
    fooled = np.isfinite(curve.effective) & (curve.effective > 0)
    if not fooled.any():
        raise ValueError("no correctly classified image was fooled: eta(d) is constant, "
                         "lambda = 0 and d_1/2 is infinite")
    d, eta = fit_samples(curve, grid, n_points)
    pos = eta > 0
    # log-linear start: log(eta/acc) = -lam d, through the origin
    x, y = d[pos], np.log(eta[pos] / acc)
    lam0 = float(-(x @ y) / (x @ x)) if (x @ x) > 0 else 1.0 / float(np.median(curve.effective[fooled]))
    lam0 = max(lam0, 1e-12)
    scale = 1.0 / lam0  # fit in units of the initial guess for good conditioning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if amplitude == "pinned":
            def model(dd: np.ndarray, k: float) -> np.ndarray:
                return acc * np.exp(-k * dd / scale)

            try:
                (k,), _ = curve_fit(model, d, eta, p0=[1.0], bounds=(0.0, np.inf))
            except RuntimeError:  # no convergence: bounded 1-D search of the same objective
                k = minimize_scalar(lambda k: float(np.sum((eta - model(d, k)) ** 2)),
                                    bounds=(0.0, 1e3), method="bounded").x
            eta0 = acc
        else:
            def model2(dd: np.ndarray, a: float, k: float) -> np.ndarray:
                return a * np.exp(-k * dd / scale)

            try:
                (eta0, k), _ = curve_fit(model2, d, eta, p0=[acc, 1.0], bounds=([0.0, 0.0], [np.inf, np.inf]))
            except RuntimeError:  # no convergence: for each k the best amplitude is closed form
                def best_a(k: float) -> float:
                    g = np.exp(-k * d / scale)
                    return float(max(0.0, (g @ eta) / (g @ g)))

                k = minimize_scalar(lambda k: float(np.sum((eta - model2(d, best_a(k), k)) ** 2)),
                                    bounds=(0.0, 1e3), method="bounded").x
                eta0 = best_a(k)
    lam = float(k) / scale
    eta0 = float(eta0)
    ss_res = float(np.sum((eta - eta0 * np.exp(-lam * d)) ** 2))
    ss_tot = float(np.sum((eta - eta.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    d_half = math.log(2.0) / lam if lam > 0 else float("inf")
    return ExponentialFit(eta0=eta0, lam=lam, d_half=d_half, r2=r2, amplitude=amplitude, grid=grid,
                          accuracy=acc, n_samples=int(d.size))


def fit_conventions(curve: OperatingCurve, n_points: int = UNIFORM_POINTS) -> dict[str, ExponentialFit | None]:
    """The four fits ``{"<amplitude>/<grid>": fit}`` (None where the fit is undefined), default first."""
    out: dict[str, ExponentialFit | None] = {}
    for a in AMPLITUDES:
        for g in GRIDS:
            try:
                out[f"{a}/{g}"] = fit_exponential(curve, amplitude=a, grid=g, n_points=n_points)
            except ValueError:
                out[f"{a}/{g}"] = None
    return out


def empirical_half_distortion(curve: OperatingCurve) -> float:
    """Distortion (pixel units) where eta first reaches eta(0)/2, linear between samples.

    ``inf`` when eta never falls to half (too many failed attacks); ``nan`` when eta(0) == 0.
    """
    eta0 = curve.accuracy
    if eta0 <= 0:
        return float("nan")
    half = eta0 / 2.0
    eta = curve.eta
    below = np.flatnonzero(eta <= half)
    if below.size == 0:
        return float("inf")
    k = int(below[0])
    if k == 0:  # only possible on a user grid whose first point is > 0
        return float(curve.d[0])
    d0, d1, e0, e1 = curve.d[k - 1], curve.d[k], eta[k - 1], eta[k]
    return float(d0 + (e0 - half) / (e0 - e1) * (d1 - d0))


def success_at(curve: OperatingCurve, budgets: Sequence[float] = DEFAULT_BUDGETS) -> dict[float, float]:
    """P(d) at fixed distortion budgets (pixel units): fraction of all images fooled at <= d.

    ``1 - P(d)`` is RobustBench's robust accuracy at that L2 budget (in pixel units, eq. 6.2).
    """
    return {float(b): float(curve(b)) for b in budgets}


@dataclass(frozen=True)
class RobustnessSummary:
    """One (model, attack, quantizer) result; distortions in pixel units (eq. 6.2).

    accuracy: eta(0) in [0, 1]. lam: fitted decay rate (nan if undefined).
    d_half_fit: ln2/lam (eq. 6.5); inf if nothing was fooled, nan if accuracy is 0.
    r2: R^2 of the fit on the curve (nan if undefined). d_half_empirical: interpolated
    crossing of eta(0)/2. success_at: {budget: P(budget)}. n_images: images in the curve;
    n_fooled / n_failed: correctly classified originals the attack fooled / did not.
    seconds_per_image: mean attack time or None. note: why a value is undefined, else "".
    d_half_unquantized, r2_unquantized: the same fit on the attack's float output before
    quantization (:func:`unquantized_curve_from_rows`), for reference only; nan when unknown.
    fits: the exponential fit under each convention of :func:`fit_conventions`,
    ``{"<amplitude>/<grid>": {"eta0", "lam", "d_half", "d_half_crossing", "r2"}}`` (empty where
    the fit is undefined); ``"pinned/breakpoints"`` repeats ``lam``, ``d_half_fit`` and ``r2``.
    """

    model: str
    attack: str
    quantizer: str
    n_images: int
    accuracy: float
    lam: float
    d_half_fit: float
    r2: float
    d_half_empirical: float
    success_at: dict[float, float] = field(default_factory=dict)
    n_fooled: int = 0
    n_failed: int = 0
    n_errors: int = 0
    seconds_per_image: float | None = None
    note: str = ""
    d_half_unquantized: float = float("nan")
    r2_unquantized: float = float("nan")
    fits: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """(model, attack, quantizer)."""
        return (self.model, self.attack, self.quantizer)

    def robust_accuracy_at(self, budget: float) -> float:
        """RobustBench-style accuracy ``1 - P(budget)`` at a budget in ``success_at``."""
        return 1.0 - self.success_at[float(budget)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (budgets as string keys)."""
        out = asdict(self)
        out["success_at"] = {f"{k:g}": v for k, v in self.success_at.items()}
        return out


def _safe_fit(curve: OperatingCurve) -> tuple[float, float, float, str]:
    """(lam, d_half, r2, note) of :func:`fit_exponential`, with the degenerate cases spelled out."""
    try:
        fit = fit_exponential(curve)
    except ValueError as err:
        ok = curve.accuracy > 0
        return (0.0 if ok else float("nan")), (float("inf") if ok else float("nan")), float("nan"), str(err)
    return fit.lam, fit.d_half, fit.r2, ""


def summarize(curve: OperatingCurve, *, model: str = "", attack: str = "", quantizer: str = "",
              budgets: Sequence[float] = DEFAULT_BUDGETS, seconds_per_image: float | None = None,
              n_errors: int = 0, unquantized: OperatingCurve | None = None) -> RobustnessSummary:
    """Summary of one curve; never raises for degenerate curves (see ``note``).

    unquantized: the curve of the attack's float output (see :func:`unquantized_curve_from_rows`),
        fitted for the ``*_unquantized`` fields.
    """
    e = curve.effective
    lam, d_half, r2, note = _safe_fit(curve)
    d_half_u, r2_u = float("nan"), float("nan")
    if unquantized is not None:
        _, d_half_u, r2_u, _ = _safe_fit(unquantized)
    return RobustnessSummary(
        model=model, attack=attack, quantizer=quantizer, n_images=curve.n_images,
        accuracy=curve.accuracy, lam=lam, d_half_fit=d_half, r2=r2,
        d_half_empirical=empirical_half_distortion(curve), success_at=success_at(curve, budgets),
        n_fooled=int(np.sum(np.isfinite(e) & (e > 0))), n_failed=int(np.sum(np.isinf(e))),
        n_errors=n_errors, seconds_per_image=seconds_per_image, note=note,
        d_half_unquantized=d_half_u, r2_unquantized=r2_u, fits=_fit_table(curve))


def _fit_table(curve: OperatingCurve) -> dict[str, dict[str, float]]:
    """:func:`fit_conventions` as plain numbers (``{}`` for an undefined fit)."""
    return {k: {} if f is None else {"eta0": f.eta0, "lam": f.lam, "d_half": f.d_half,
                                      "d_half_crossing": f.d_half_crossing, "r2": f.r2}
            for k, f in fit_conventions(curve).items()}


def summarize_rows(rows: Iterable[Mapping[str, Any]], *,
                   budgets: Sequence[float] = DEFAULT_BUDGETS
                   ) -> list[tuple[RobustnessSummary, OperatingCurve]]:
    """Group store rows by (model, attack, quantizer) and summarize each group.

    Rows with an ``error`` are excluded from the curve and counted in ``n_errors``; seconds
    per image is the mean of the ``seconds`` column over the other rows. Groups that only
    hold errors are skipped. Order: first appearance. White-box groups whose rows carry the
    attack's float output also get the ``*_unquantized`` fields.
    """
    out = []
    for (model, attack, quantizer), rs in group_rows(rows).items():
        ok = [r for r in rs if not r.get("error")]
        if not ok:
            continue
        secs = [float(r["seconds"]) for r in ok if r.get("seconds") is not None]
        curve = curve_from_rows(ok)
        out.append((summarize(curve, model=model, attack=attack, quantizer=quantizer,
                              budgets=budgets, n_errors=len(rs) - len(ok),
                              seconds_per_image=float(np.mean(secs)) if secs else None,
                              unquantized=unquantized_curve_from_rows(ok)), curve))
    return out


def group_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """Store rows grouped by (model, attack, quantizer), groups in order of first appearance."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["attack"]), str(r.get("quantizer") or "")),
                          []).append(r)
    return groups


def unquantized_curves(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], OperatingCurve]:
    """``{(model, attack, quantizer): curve}`` of :func:`unquantized_curve_from_rows` where defined."""
    out = {}
    for key, rs in group_rows(rows).items():
        c = unquantized_curve_from_rows(rs)
        if c is not None:
            out[key] = c
    return out
