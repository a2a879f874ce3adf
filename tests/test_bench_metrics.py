"""Operating curve, exponential fit and half-distortion (thesis eq. 6.3-6.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advimage.bench.metrics import (
    OperatingCurve,
    curve_from_rows,
    effective_distortion,
    empirical_half_distortion,
    fit_conventions,
    fit_exponential,
    operating_curve,
    success_at,
    summarize,
    summarize_rows,
    unquantized_curve_from_rows,
    unquantized_curves,
)


def small_curve() -> OperatingCurve:
    """Six images: four fooled at 0.5, 1, 2, 3; one attack failed; one misclassified original."""
    return operating_curve(distortion=[0.5, 1.0, 2.0, 3.0, 9.0, 7.0],
                           success=[True, True, True, True, False, True],
                           misclassified=[False, False, False, False, False, True])


def test_small_curve_by_hand():
    c = small_curve()
    np.testing.assert_allclose(c.d, [0.0, 0.5, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(c.p, [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    np.testing.assert_allclose(c.eta, [5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert c.accuracy == pytest.approx(5 / 6)
    assert c.n_images == 6
    # the failed attack never counts: P stays below 1 at any distortion
    assert c(1e9) == pytest.approx(5 / 6)
    np.testing.assert_allclose(c([0.0, 0.49, 0.5, 2.5]), [1 / 6, 1 / 6, 2 / 6, 4 / 6])
    # eta(0)/2 = 5/12 is crossed between (1, 1/2) and (2, 1/3): 1 + (1/2 - 5/12) / (1/6) = 1.5
    assert empirical_half_distortion(c) == pytest.approx(1.5)
    assert success_at(c, (0.5, 1, 2)) == pytest.approx({0.5: 2 / 6, 1.0: 3 / 6, 2.0: 4 / 6})


def test_effective_distortion_rules():
    e = effective_distortion([0.3, 0.7, np.nan, 5.0], [True, False, False, True], [False, False, True, True])
    np.testing.assert_array_equal(e, [0.3, np.inf, 0.0, 0.0])


def test_user_grid():
    c = operating_curve([0.5, 1.0, 2.0, 3.0], [1, 1, 1, 0], grid=[0.0, 1.0, 10.0])
    np.testing.assert_allclose(c.p, [0.0, 0.5, 0.75])
    with pytest.raises(ValueError, match="strictly increasing"):
        operating_curve([1.0], [True], grid=[1.0, 0.5])


def test_exact_exponential_fit_is_exact():
    # eta(d) = 0.8 exp(-2 d) sampled exactly on a grid: the fit recovers lambda and R^2 = 1
    d = np.linspace(0, 3, 61)
    eta0, lam = 0.8, 2.0
    # 20 of 100 originals misclassified gives eta(0) = 0.8; the fit only uses the samples (d, p)
    c = OperatingCurve(d=d, p=1 - eta0 * np.exp(-lam * d),
                       effective=np.concatenate([np.zeros(20), np.linspace(0.01, 3, 80)]))
    assert c.accuracy == pytest.approx(eta0)
    f = fit_exponential(c)
    assert f.lam == pytest.approx(lam, rel=1e-6)
    assert f.d_half == pytest.approx(math.log(2) / lam, rel=1e-6)
    assert f.r2 == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("lam,acc", [(4.0, 0.8), (0.3, 0.6), (25.0, 0.95)])
def test_fit_recovers_lambda_from_samples(lam, acc):
    rng = np.random.default_rng(int(lam * 10))
    n = 4000
    mis = rng.random(n) > acc
    d = rng.exponential(1 / lam, n)  # P(D > d) = exp(-lam d), so eta(d) = acc exp(-lam d)
    c = operating_curve(d, np.ones(n, bool), mis)
    f = fit_exponential(c)
    assert f.eta0 == pytest.approx(acc, abs=0.03)
    assert f.lam == pytest.approx(lam, rel=0.06)
    assert f.d_half == pytest.approx(math.log(2) / lam, rel=0.06)
    assert f.r2 > 0.995
    assert empirical_half_distortion(c) == pytest.approx(math.log(2) / lam, rel=0.08)
    # fitted model evaluated on the grid stays close to the measured curve
    assert np.max(np.abs(f(c.d) - c.eta)) < 0.03


def test_fit_r2_drops_for_non_exponential_curve():
    # a step-like accuracy (every image fooled at about d = 1) is poorly fitted by eq. 6.4
    d = np.r_[np.full(50, 0.99), np.full(50, 1.01)]
    f = fit_exponential(operating_curve(d, np.ones(100, bool)))
    assert f.r2 < 0.9


def _fooled_fraction_curve(e: np.ndarray, n_mis: int = 0):
    """(breakpoints d, eta there, uniform d, eta there) computed directly from per-image distortions
    (all fooled), independently of the library: eta(d) = #{e_i > d} / N."""
    n = e.size + n_mis
    bd = np.unique(np.r_[0.0, e])
    ud = np.linspace(0.0, e.max(), 200)
    eta = lambda q: np.array([np.sum(e > x) for x in q]) / n  # noqa: E731
    return bd, eta(bd), ud, eta(ud)


def _scipy_fit(d, eta, acc, amplitude):
    """Reference least squares with scipy directly: (amplitude, lam, R^2)."""
    from scipy.optimize import least_squares

    if amplitude == "pinned":
        r = least_squares(lambda p: acc * np.exp(-p[0] * d) - eta, [1.0], bounds=(0, np.inf),
                          xtol=1e-14, ftol=1e-14, gtol=1e-14)
        a, lam = acc, r.x[0]
    else:
        r = least_squares(lambda p: p[0] * np.exp(-p[1] * d) - eta, [acc, 1.0], bounds=(0, np.inf),
                          xtol=1e-14, ftol=1e-14, gtol=1e-14)
        a, lam = r.x
    res = eta - a * np.exp(-lam * d)
    return a, lam, 1 - np.sum(res ** 2) / np.sum((eta - eta.mean()) ** 2)


@pytest.mark.parametrize("amplitude", ["pinned", "fitted"])
@pytest.mark.parametrize("grid", ["breakpoints", "uniform"])
def test_conventions_recover_exact_exponential(amplitude, grid):
    # 2000 correctly classified images at the quantiles of Exp(lam), 500 misclassified: eta(d) = 0.8 exp(-3 d)
    lam, n = 3.0, 2000
    d = -np.log(1 - (np.arange(n) + 0.5) / n) / lam
    c = operating_curve(np.r_[d, np.zeros(500)], np.ones(n + 500, bool), np.r_[np.zeros(n, bool), np.ones(500, bool)])
    f = fit_exponential(c, amplitude=amplitude, grid=grid)
    assert (f.amplitude, f.grid, f.n_samples) == (amplitude, grid, n + 1 if grid == "breakpoints" else 200)
    assert f.accuracy == pytest.approx(0.8)
    assert f.eta0 == pytest.approx(0.8, abs=2e-3)
    assert f.lam == pytest.approx(lam, rel=5e-3)
    assert f.d_half == pytest.approx(math.log(2) / lam, rel=5e-3)
    assert f.r2 == pytest.approx(1.0, abs=1e-5)
    assert f.d_half_crossing == pytest.approx(f.d_half, rel=5e-3)


def _sigmoid_distortions(n=2000, m=0.15, s=0.03):
    """Quantiles of a logistic(m, s) truncated at 0: eta(d) stays near 1, then falls fast."""
    f0 = 1 / (1 + math.exp(m / s))
    q = f0 + (np.arange(n) + 0.5) / n * (1 - f0)
    return m + s * np.log(q / (1 - q))


def test_fitted_amplitude_differs_from_accuracy_on_sigmoid():
    e = _sigmoid_distortions()
    c = operating_curve(e, np.ones(e.size, bool))
    bd, beta, _, _ = _fooled_fraction_curve(e)
    np.testing.assert_allclose(c.d, bd)
    np.testing.assert_allclose(c.eta, beta)
    a_ref, lam_ref, r2_ref = _scipy_fit(bd, beta, 1.0, "fitted")
    f = fit_exponential(c, amplitude="fitted")
    assert f.eta0 == pytest.approx(a_ref, rel=1e-4) and f.lam == pytest.approx(lam_ref, rel=1e-4)
    assert f.r2 == pytest.approx(r2_ref, abs=1e-6)
    assert f.eta0 > c.accuracy + 0.3  # the flat top pushes the exponential's amplitude far above eta(0) = 1
    pinned = fit_exponential(c)
    assert pinned.eta0 == c.accuracy == 1.0
    assert f.r2 > pinned.r2 + 0.1 and f.d_half < pinned.d_half
    # the fitted model crosses eta(0)/2 at d_half_crossing, not at ln2 / lam
    assert f(f.d_half_crossing) == pytest.approx(c.accuracy / 2)
    assert f.d_half_crossing > f.d_half


def test_uniform_grid_changes_r2_on_clustered_samples():
    # 90 images fooled between 0.1 and 0.2, 10 spread up to 5: breakpoints crowd where images do
    rng = np.random.default_rng(0)
    e = np.r_[rng.uniform(0.1, 0.2, 90), rng.uniform(0.2, 5.0, 10)]
    c = operating_curve(e, np.ones(e.size, bool))
    bd, beta, ud, ueta = _fooled_fraction_curve(e)
    r2 = {}
    for grid, (d, eta) in {"breakpoints": (bd, beta), "uniform": (ud, ueta)}.items():
        for amplitude in ("pinned", "fitted"):
            a_ref, lam_ref, r2_ref = _scipy_fit(d, eta, 1.0, amplitude)
            f = fit_exponential(c, amplitude=amplitude, grid=grid)
            assert f.lam == pytest.approx(lam_ref, rel=1e-4) and f.eta0 == pytest.approx(a_ref, rel=1e-4)
            assert f.r2 == pytest.approx(r2_ref, abs=1e-6)
            r2[amplitude, grid] = f.r2
    assert abs(r2["pinned", "uniform"] - r2["pinned", "breakpoints"]) > 0.05
    fits = fit_conventions(c)
    assert list(fits) == ["pinned/breakpoints", "pinned/uniform", "fitted/breakpoints", "fitted/uniform"]
    assert fits["pinned/uniform"].r2 == pytest.approx(r2["pinned", "uniform"])
    # the default is RoBIC's convention
    assert fit_exponential(c).r2 == r2["pinned", "breakpoints"]


def test_unknown_fit_convention():
    c = small_curve()
    with pytest.raises(ValueError, match="valid: pinned, fitted"):
        fit_exponential(c, amplitude="free")
    with pytest.raises(ValueError, match="valid: breakpoints, uniform"):
        fit_exponential(c, grid="log")
    none = operating_curve([0.0, 0.0], [False, False])
    assert all(f is None for f in fit_conventions(none).values())


def test_all_fooled_at_zero():
    c = operating_curve([0.0, 0.0, 0.0], [True, True, True], [True, True, True])
    assert c.accuracy == 0.0
    with pytest.raises(ValueError, match="every original is misclassified"):
        fit_exponential(c)
    assert math.isnan(empirical_half_distortion(c))
    s = summarize(c, model="m", attack="a")
    assert math.isnan(s.d_half_fit) and math.isnan(s.r2) and "misclassified" in s.note


def test_none_fooled():
    c = operating_curve([0.0, 0.0, 1.0], [False, False, False], [False, False, True])
    assert c.accuracy == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no correctly classified image was fooled"):
        fit_exponential(c)
    assert empirical_half_distortion(c) == math.inf
    s = summarize(c)
    assert s.d_half_fit == math.inf and s.lam == 0.0 and s.n_failed == 2 and s.n_fooled == 0


def test_invalid_inputs():
    with pytest.raises(ValueError, match="no images"):
        operating_curve([], [])
    with pytest.raises(ValueError, match="same length"):
        operating_curve([1.0, 2.0], [True])
    with pytest.raises(ValueError, match="invalid distortion"):
        operating_curve([np.nan], [True])
    with pytest.raises(ValueError, match="invalid distortion"):
        operating_curve([-1.0], [True])
    with pytest.raises(ValueError, match="booleans"):
        operating_curve([1.0], [0.5])
    with pytest.raises(ValueError, match="no rows"):
        curve_from_rows([{"error": "boom"}])


def test_summary_fields_and_rows():
    rows = []
    for i, (dist, ok) in enumerate([(0.5, True), (1.0, True), (2.0, True), (3.0, True), (9.0, False)]):
        rows.append(dict(model="m", attack="bp", quantizer="none", image=f"i{i}", label=1, prediction=1,
                         distortion=dist, success=ok, seconds=1.0 + i, error=None))
    rows.append(dict(model="m", attack="bp", quantizer="none", image="i5", label=1, prediction=0,
                     distortion=0.0, success=True, seconds=0.0, error=None))
    rows.append(dict(model="m", attack="bp", quantizer="none", image="i6", label=1, prediction=1,
                     distortion=None, success=None, seconds=None, error="CUDA OOM"))
    rows.append(dict(model="m", attack="surfree", quantizer="none", image="i0", label=1, prediction=1,
                     distortion=4.0, success=True, seconds=2.0, error=None))
    out = summarize_rows(rows)
    assert [s.key for s, _ in out] == [("m", "bp", "none"), ("m", "surfree", "none")]
    s, c = out[0]
    np.testing.assert_allclose(c.p, small_curve().p)
    assert s.n_images == 6 and s.n_errors == 1 and s.n_fooled == 4 and s.n_failed == 1
    assert s.accuracy == pytest.approx(5 / 6)
    assert s.d_half_empirical == pytest.approx(1.5)
    assert s.seconds_per_image == pytest.approx(np.mean([1, 2, 3, 4, 5, 0]))
    assert s.success_at == pytest.approx({0.5: 2 / 6, 1.0: 3 / 6, 2.0: 4 / 6})
    assert s.robust_accuracy_at(1) == pytest.approx(0.5)
    assert 0 < s.r2 <= 1 and s.d_half_fit == pytest.approx(math.log(2) / s.lam)
    assert s.to_dict()["success_at"]["0.5"] == pytest.approx(2 / 6)


def _white_rows(floats, images, quantizer="smart"):
    """Store-like rows of one white-box job: (float distortion, float success) and image distortion."""
    rows = []
    for i, ((fd, fs), d) in enumerate(zip(floats, images)):
        rows.append(dict(model="m", attack="bp", quantizer=quantizer, image=f"i{i}", label=1, prediction=1,
                         distortion=d, success=d is not None, seconds=1.0, error=None,
                         extra={"attack_distortion": fd, "attack_success": fs}))
    return rows


def test_unquantized_curve_is_the_float_output():
    floats = [(0.05, True), (0.1, True), (0.2, True), (0.3, False)]
    images = [0.2, 0.3, 0.5, None]
    rows = _white_rows(floats, images)
    rows.append(dict(model="m", attack="bp", quantizer="smart", image="mis", label=1, prediction=3,
                     distortion=0.0, success=True, seconds=0.0, error=None, extra={"misclassified": True}))
    rows.append(dict(model="m", attack="bp", quantizer="smart", image="err", label=1, prediction=1,
                     error="unreadable", extra={}))
    u = unquantized_curve_from_rows(rows)
    ref = operating_curve([0.05, 0.1, 0.2, 0.3, 0.0], [True, True, True, False, True],
                          [False, False, False, False, True])
    np.testing.assert_allclose(u.d, ref.d)
    np.testing.assert_allclose(u.p, ref.p)
    # the summary fits both; Table 6.2's d1/2 stays the one of the images
    (s, c), = summarize_rows(rows)
    np.testing.assert_allclose(c.d, [0.0, 0.2, 0.3, 0.5])
    assert s.d_half_fit == pytest.approx(fit_exponential(c).d_half)
    assert s.d_half_unquantized == pytest.approx(fit_exponential(ref).d_half)
    assert s.r2_unquantized == pytest.approx(fit_exponential(ref).r2)
    assert s.d_half_unquantized < s.d_half_fit
    assert set(unquantized_curves(rows)) == {("m", "bp", "smart")}


def test_unquantized_curve_undefined():
    rows = _white_rows([(0.1, True), (0.2, True)], [0.2, 0.3])
    assert unquantized_curve_from_rows(_white_rows([(0.1, True)], [0.2], quantizer="none")) is None
    del rows[1]["extra"]["attack_distortion"]  # rows written by something else
    assert unquantized_curve_from_rows(rows) is None
    assert unquantized_curve_from_rows([dict(rows[0], error="boom")]) is None
    # a float success without a valid distortion gives no reference curve instead of raising
    assert unquantized_curve_from_rows(_white_rows([(float("nan"), True)], [0.2])) is None
    (s, _), = summarize_rows(rows)
    assert math.isnan(s.d_half_unquantized) and math.isnan(s.r2_unquantized)
    assert unquantized_curves(rows) == {}
