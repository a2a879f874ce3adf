"""BRISQUE in torch (models/brisque.py), the score criterion, the engine and CLI on a regressor.

Reference scores: the ``brisque`` PyPI package 0.2.0 (``BRISQUE(url=False).score`` on
scikit-image 0.26's photos, OpenCV 5.0 for its half-size resize; under NumPy 2 its features must be
flattened before scaling, see ``_package``). They are recorded below so that the comparison runs
without OpenCV; where the package imports, it is also compared live.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle

import numpy as np
import pytest
import torch

from advimage.criteria import Margin, ScoreBelow, as_criterion

pytestmark = pytest.mark.skipif(importlib.util.find_spec("brisque") is None,
                                reason="the brisque package (its svm.txt, normalize.pickle) is not installed")

#: brisque 0.2.0's scores of skimage.data photos (recorded with OpenCV 5.0.0, NumPy 2.4)
PACKAGE_SCORES = {"astronaut": 10.794862939073454, "coffee": 3.0479264284917633, "chelsea": 2.870766629424878}


@pytest.fixture(scope="module")
def brisque_model():
    from advimage.models.brisque import BRISQUE

    return BRISQUE()


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _pixels(img: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(dtype)


def _package():
    """The package's scorer, or None where it does not import (it needs OpenCV)."""
    try:
        from brisque import BRISQUE as Ref
    except ImportError:
        return None

    class Fixed(Ref):  # brisque 0.2.0 under NumPy 2: its features are 1-element arrays
        def scale_features(self, features):
            return super().scale_features([np.ravel(f)[0] for f in features])

    return Fixed(url=False)


# -- the regressor matches the package ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PACKAGE_SCORES))
def test_matches_package_scores(brisque_model, name):
    img = _photo(name)
    ours = float(brisque_model(_pixels(img))[0])
    assert ours == pytest.approx(PACKAGE_SCORES[name], rel=0.01)
    ref = _package()
    if ref is not None:
        assert ours == pytest.approx(float(ref.score(img)), rel=0.01)


def test_half_size_resize_is_opencvs():
    cv2 = pytest.importorskip("cv2")
    from advimage.models.brisque import cv2_half_cubic

    g = np.random.default_rng(0).random((31, 46))
    ours = cv2_half_cubic(torch.from_numpy(g)[None])[0].numpy()
    ref = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-12


def test_batch_and_dtype(brisque_model):
    img = _photo("chelsea")[:64, :80]
    x = _pixels(img)
    both = brisque_model(torch.cat([x, x.flip(-1)]))
    assert both.shape == (2,) and both.dtype == torch.float32
    assert float(both[0]) == pytest.approx(float(brisque_model(x)[0]), rel=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        brisque_model(x[:, :1])
    with pytest.raises(ValueError, match="8x8"):
        brisque_model(x[..., :5, :5])


# -- gradients -------------------------------------------------------------------------------
def test_alpha_solver_and_fit_gradcheck():
    from advimage.models.brisque import _log_phi, aggd_fit, solve_alpha

    r = torch.tensor([0.3, 0.5, 0.6366, 0.7], dtype=torch.float64, requires_grad=True)
    alpha = solve_alpha(r)
    assert torch.allclose(_log_phi(alpha.detach()).exp(), r.detach(), atol=1e-12)
    assert float(alpha[2].detach()) == pytest.approx(2.0, rel=1e-3)  # φ(2) = 2/π: the Gaussian
    assert torch.autograd.gradcheck(solve_alpha, (r,))
    z = torch.randn(2, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.stack(aggd_fit(t), 1), (z,))


def test_gradient_matches_finite_differences(brisque_model):
    """Directional central differences of the whole score in float64 on a small photo crop."""
    x = _pixels(_photo("astronaut")[100:124, 200:228], torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(brisque_model(x).sum(), x)
    gen = torch.Generator().manual_seed(1)
    h = 1e-4
    for _ in range(3):
        v = torch.randn(x.shape, dtype=torch.float64, generator=gen)
        with torch.no_grad():
            fd = (brisque_model(x + h * v) - brisque_model(x - h * v)).sum() / (2 * h)
        assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-4, abs=1e-8)


# -- model files -----------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.getpid, ())  # harmless, but a global call: must be refused before running


def test_safe_unpickler_refuses_code():
    from advimage.models.brisque import ModelFileError, safe_load_normalization

    with pytest.raises(ModelFileError, match="refused"):
        safe_load_normalization(pickle.dumps({"min_": _Evil(), "max_": [0.0] * 36}))
    with pytest.raises(ModelFileError, match="refused"):
        safe_load_normalization(pickle.dumps(np.zeros(36)))  # numpy arrays are globals too
    with pytest.raises(ModelFileError, match="36 numbers"):
        safe_load_normalization(pickle.dumps({"min_": [0.0] * 3, "max_": [1.0] * 3}))
    with pytest.raises(ModelFileError, match="unreadable"):
        safe_load_normalization(b"not a pickle")
    lo, hi = safe_load_normalization(pickle.dumps({"min_": [0.0] * 36, "max_": list(range(1, 37))}))
    assert lo == [0.0] * 36 and hi[-1] == 36.0


def test_package_files_load(brisque_model):
    from advimage.models.brisque import package_model_dir, safe_load_normalization

    lo, hi = safe_load_normalization(package_model_dir() / "normalize.pickle")
    assert len(lo) == len(hi) == 36 and all(a < b for a, b in zip(lo, hi))
    assert brisque_model.support_vectors.shape[1] == 36 and brisque_model.gamma > 0


def test_libsvm_parser_prediction():
    from advimage.models.brisque import ModelFileError, parse_libsvm_model

    text = ("svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho -1.5\nSV\n"
            "2 1:1 3:-1\n-0.5 2:2\n")
    m = parse_libsvm_model(text, n_features=3)
    x = torch.tensor([0.5, 0.0, -1.0], dtype=torch.float64)
    expected = 2 * math.exp(-0.5 * 0.25) - 0.5 * math.exp(-0.5 * (0.25 + 4 + 1)) + 1.5
    pred = float(torch.exp(-m.gamma * (m.support_vectors - x).square().sum(1)) @ m.coef - m.rho)
    assert pred == pytest.approx(expected)
    with pytest.raises(ModelFileError, match="rbf"):
        parse_libsvm_model(text.replace("rbf", "linear"), n_features=3)
    with pytest.raises(ModelFileError, match="outside"):
        parse_libsvm_model(text.replace("3:-1", "4:-1"), n_features=3)


# -- the criterion ---------------------------------------------------------------------------
def test_score_below_semantics():
    s = torch.tensor([20.0, 30.0, 40.0])
    c = ScoreBelow(torch.full((3,), 30.0))
    assert c.loss(s).tolist() == [-10.0, 0.0, 10.0]
    assert c.success(s).tolist() == [True, False, False]          # strictly below s_a
    assert c.success(s[:, None]).tolist() == [True, False, False]  # (N, 1) outputs too
    assert (c.success(s) == (c.loss(s) < 0)).all()
    worse_is_higher = ScoreBelow(torch.full((3,), 30.0), higher_is_better=False)
    assert worse_is_higher.loss(s).tolist() == [10.0, 0.0, -10.0]
    assert worse_is_higher.success(s).tolist() == [False, False, True]
    sub = c.subset(torch.tensor([2]))
    assert len(sub) == 1 and sub.loss(torch.tensor([25.0])).tolist() == [-5.0]
    assert as_criterion(c) is c
    m = Margin(c, 5.0)  # margin in score units
    assert m.success(torch.tensor([24.0, 26.0, 40.0])).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="one score per image"):
        c.loss(torch.zeros(3, 2))


def test_quality_is_100_minus_brisque(brisque_model):
    from advimage.models.regressors import load_regressor

    q = load_regressor("brisque", device="cpu")
    x = _pixels(_photo("chelsea")[:64, :96])
    assert q.higher_is_better and float(q(x)[0]) == pytest.approx(100 - float(brisque_model(x)[0]), rel=1e-6)


# -- engine and CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("reg") / "cat.png"
    Image.fromarray(_photo("chelsea")).resize((120, 80), Image.BILINEAR).save(path)
    return path


def test_engine_attacks_and_quantizers_with_a_regressor(small_photo):
    from advimage import codec
    from advimage.data import ImageItem
    from advimage.engine import Settings, run_batch
    from advimage.models.regressors import load_regressor

    torch.manual_seed(0)
    q = load_regressor("brisque", device="cpu")
    rows = run_batch(q, [ImageItem(small_photo)], Settings(attack="pgd", steps=12, quantizers=("smart", "jpeg"),
                                                           target_score=60.0))
    assert [r.quantizer for r in rows] == ["smart", "jpeg"]
    for r in rows:
        assert r.original_score > 60 and r.status == "fooled", r
        x = codec.decode(r.data, r.suffix)
        assert float(q(x[None].float())[0]) == pytest.approx(r.score, abs=1e-3) and r.score < 60
        assert r.gradients <= 12 and r.verified_paths == {"file": True}


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "pgd", "bp", "cw"])
def test_every_gradient_attack_takes_a_score_criterion(small_photo, attack):
    from advimage.data import ImageItem
    from advimage.engine import Settings, run_batch
    from advimage.models.regressors import load_regressor

    torch.manual_seed(0)
    q = load_regressor("brisque", device="cpu")
    (row,) = run_batch(q, [ImageItem(small_photo)], Settings(attack=attack, steps=8, quantizers=("smart",),
                                                             target_score=60.0))
    assert row.error is None and row.score is not None and row.gradients <= 8
    assert row.status == ("fooled" if row.score < 60 else "failed")
    if attack != "cw":  # CW's Adam needs more than 8 steps here (it succeeds with 60)
        assert row.status == "fooled"


def test_cli_writes_a_verified_png(small_photo, tmp_path, capsys):
    from advimage.cli import main
    from advimage.images import read_image
    from advimage.models.regressors import load_regressor

    out = tmp_path / "out"
    assert main(["attack", str(small_photo), "--regressor", "brisque", "--target-score", "50", "--attack", "pgd",
                 "--steps", "12", "--out", str(out), "--quiet", "--no-figures", "--device", "cpu"]) == 0
    png = out / "cat_adv.png"
    assert png.exists()
    q = load_regressor("brisque", device="cpu")
    assert float(q(read_image(png)[None].float())[0]) < 50
    ref = _package()
    if ref is not None:  # the package agrees: BRISQUE above 100 - 50
        assert float(ref.score(read_image(png).permute(1, 2, 0).numpy())) > 50
    assert "target < 50" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--regressor", "brisque"], "go together"),
    (["--target-score", "30"], "go together"),
    (["--regressor", "brisque", "--target-score", "nan"], "finite"),
    (["--regressor", "brisque", "--target-score", "30", "--size", "model"], "native"),
    (["--regressor", "brisque", "--target-score", "30", "--target", "3"], "does not apply"),
    (["--regressor", "brisque", "--target-score", "30", "--attack", "surfree"], "gradient attack"),
])
def test_cli_errors(small_photo, tmp_path, capsys, extra, message):
    from advimage.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["attack", str(small_photo), "--out", str(tmp_path / "o"), "--quiet", *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_unknown_regressor(small_photo, tmp_path, capsys):
    from advimage.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["attack", str(small_photo), "--regressor", "nope", "--target-score", "3", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "brisque" in capsys.readouterr().err


def test_settings_refuse_bad_regressor_options():
    from advimage.engine import Settings

    with pytest.raises(ValueError, match="finite"):
        Settings(attack="pgd", target_score=float("inf"))
    with pytest.raises(ValueError, match="gradient attack"):
        Settings(attack="ddn", target_score=30.0)
    assert Settings(attack="pgd", target_score=30.0).identity()["target_score"] == 30.0
    assert "target_score" not in Settings(attack="pgd").identity()


def test_app_a_summary_and_markdown():
    from advimage.experiments.app_a import markdown, summarize

    recs = [dict(file=f"{i}", method=m, target=30.0, status="fooled" if i else "misclassified",
                 original_score=80.0, score_file=20.0, score_jpeg=40.0 if m == "spatial" else 25.0,
                 success_file=True, success_jpeg=m == "dct", distortion=1.0 if i else 0.0,
                 compression_distortion=3.0 if m == "dct" and i else None)
            for i in range(2) for m in ("spatial", "dct")]
    s = summarize(recs, (30.0,))
    assert s["rows"]["spatial@30"]["p_file"] == 100 and s["rows"]["spatial@30"]["p_jpeg"] == 0
    assert s["rows"]["dct@30"]["p_jpeg"] == 100 and s["rows"]["dct@30"]["already"] == 1
    assert "| DCT → JPEG 90 | 30 | 100.0 | 100.0 | 77.5 / 63.8 |" in markdown(s)

