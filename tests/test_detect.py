"""Steganalysis detectors (thesis §8.4): features, linear detectors, SRNet, metrics, pair sets, CLI.

Rich-model features cost ~0.7 s per image whatever its size (sealwatch's symmetrization), so the
tests use few, tiny images and share them through module-scoped fixtures.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from advimage.cli import main
from advimage.detect import features as feat
from advimage.detect.linear import FldEnsembleDetector, RidgeDetector
from advimage.detect.metrics import (
    auc,
    p_fool_both,
    p_fool_both_direct,
    plot_roc,
    roc_points,
    threshold_at_fpr,
    tpr_at_fpr,
)
from advimage.detect.pairs import PairSetError, read_pairs
from advimage.detect.srnet import SRNet, SRNetDetector, augment_pairs, lr_at, train_srnet
from advimage.detect.store import DetectorLoadError, load


def _smooth(g: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n smooth RGB images (n, size, size, 3) uint8: 4×4 random colours, bilinear upsampling."""
    low = g.integers(60, 196, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in low])


def _stego(g: np.random.Generator, cover: np.ndarray, amplitude: int) -> np.ndarray:
    noise = amplitude * g.choice([-1, 1], size=cover.shape)
    return np.clip(cover.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """SRNet on a shared 2-core machine: one thread is ~10x faster than two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ features

def _sealwatch_flat(d) -> np.ndarray:
    return np.concatenate([np.asarray(d[k], np.float32).ravel() for k in sorted(d)])


def test_srm_has_34671_features_equal_to_sealwatch_on_luminance(tiny_image):
    import sealwatch

    x = feat.extract(tiny_image, "srm")
    assert x.shape == (34_671,) and x.dtype == np.float32
    # independently: ITU-R 601 luma in Pillow's fixed point, then sealwatch's SRM
    r, g, b = (tiny_image[..., c].astype(np.int64) for c in range(3))
    y = ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).astype(np.uint8)
    np.testing.assert_array_equal(y, np.asarray(Image.fromarray(tiny_image).convert("L")))
    np.testing.assert_array_equal(x, _sealwatch_flat(sealwatch.srm.extract(y)))


def test_scrmq1_has_18157_features_srmq1_summed_over_channels_then_crmq1(tiny_image):
    import sealwatch

    x = feat.extract(tiny_image, "scrmq1")
    assert x.shape == (18_157,) and x.dtype == np.float32
    per_channel = [sealwatch.srmq1.extract(tiny_image[..., c]) for c in range(3)]
    srmq1 = np.sum([_sealwatch_flat(d).astype(np.float64) for d in per_channel], axis=0)
    crmq1 = _sealwatch_flat(sealwatch.crm.extract(tiny_image, Tc=3))
    assert srmq1.shape == (12_753,) and crmq1.shape == (5_404,)
    np.testing.assert_allclose(x[:12_753], srmq1, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(x[12_753:], crmq1)


def test_extract_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown feature kind"):
        feat.extract(np.zeros((16, 16, 3), np.uint8), "spam")
    with pytest.raises(ValueError, match="uint8"):
        feat.extract(np.zeros((16, 16, 3), np.float32), "srm")
    with pytest.raises(ValueError, match="too small"):
        feat.extract(np.zeros((4, 16, 3), np.uint8), "srm")


@pytest.fixture(scope="module")
def two_files(tmp_path_factory, tiny_image):
    folder = tmp_path_factory.mktemp("files")
    paths = []
    for i in range(2):
        p = folder / f"img{i}.png"
        Image.fromarray(np.roll(tiny_image, 3 * i, axis=1)).save(p)
        paths.append(p)
    return paths


def test_cache_gives_identical_arrays_and_is_hit(two_files, tmp_path, monkeypatch, tiny_image):
    cache = tmp_path / "cache"
    first = feat.extract_files(two_files, "srm", cache_dir=cache, progress=False)
    assert first.shape == (2, 34_671)
    np.testing.assert_array_equal(first[0], feat.extract(tiny_image, "srm"))
    assert feat.cached(two_files, "srm", cache) == [True, True]
    cached = sorted((cache / "srm").glob("*.npy"))
    assert len(cached) == 2 and all(f"sw{feat.sealwatch_version()}" in p.name for p in cached)

    def boom(*_a, **_k):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(feat, "extract", boom)
    second = feat.extract_files(two_files, "srm", cache_dir=cache, progress=False)
    np.testing.assert_array_equal(first, second)
    # the key is the file's bytes: a renamed copy hits the cache as well
    copy = tmp_path / "renamed.png"
    copy.write_bytes(two_files[1].read_bytes())
    np.testing.assert_array_equal(feat.extract_files([copy], "srm", cache_dir=cache, progress=False)[0], first[1])


def test_parallel_extraction_matches_serial(two_files, tmp_path):
    cache = tmp_path / "c"
    serial = feat.extract_files(two_files, "srm", cache_dir=cache, progress=False)
    for p in (cache / "srm").glob("*.npy"):
        p.unlink()
    parallel = feat.extract_files(two_files, "srm", processes=2, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(serial, parallel)


def test_missing_and_corrupt_files_are_named(two_files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(feat.FeatureError, match="bad.png"):
        feat.extract_files([bad], "scrmq1", progress=False)
    with pytest.raises(feat.FeatureError, match="missing.png"):
        feat.extract_files([two_files[0], tmp_path / "missing.png"], "srm", processes=2, progress=False)


# ----------------------------------------------------------------------------- linear detectors

@pytest.fixture(scope="module")
def easy_features():
    g = np.random.default_rng(0)
    cover = g.normal(size=(60, 40))
    stego = g.normal(size=(60, 40))
    stego[:, :4] += 1.5
    return cover[:40], stego[:40], cover[40:], stego[40:]


@pytest.mark.parametrize("make", [lambda: RidgeDetector("srm"),
                                  lambda: FldEnsembleDetector("scrmq1", L=21, d_sub=8, seed=1)])
def test_linear_detectors_separate_and_round_trip(make, easy_features, tmp_path):
    c, s, tc, ts = easy_features
    det = make().fit(c, s)
    clean, adv = det.score(tc), det.score(ts)
    assert clean.shape == (20,) and adv.shape == (20,)
    assert auc(clean, adv) > 0.9
    det.save(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["detector.json", "weights.npz"]
    again = load(tmp_path / "d")
    assert type(again) is type(det) and again.features == det.features
    np.testing.assert_array_equal(again.score(tc), clean)
    np.testing.assert_array_equal(again.score(ts), adv)


def test_fld_votes_equal_sealwatch_ensemble(easy_features):
    from sealwatch.ensemble_classifier import FldEnsembleTrainer

    c, s, tc, _ = easy_features
    det = FldEnsembleDetector(L=15, d_sub=6, seed=3).fit(c, s)
    ensemble, _ = FldEnsembleTrainer(c.copy(), s.copy(), seed=3, L=15, d_sub=6, verbose=0).train()
    np.testing.assert_array_equal(det.score(tc), ensemble.predict_confidence(tc))
    assert det.weights.shape == (15, 6) and det.subspaces.shape == (15, 6)


def test_linear_detectors_refuse_bad_shapes(easy_features):
    c, s, _, _ = easy_features
    with pytest.raises(ValueError, match="pairs"):
        FldEnsembleDetector(L=3, d_sub=4).fit(c, s[:-1])
    det = RidgeDetector().fit(c, s)
    with pytest.raises(ValueError, match=r"\(N, 40\)"):
        det.score(np.zeros((3, 41)))


def test_loading_never_unpickles(easy_features, tmp_path, monkeypatch):
    c, s, tc, _ = easy_features
    RidgeDetector("srm").fit(c, s).save(tmp_path / "ridge")
    FldEnsembleDetector("srm", L=3, d_sub=4).fit(c, s).save(tmp_path / "fld")
    SRNetDetector(SRNet(3), device="cpu").save(tmp_path / "srnet")

    def no_unpickling(*_a, **_k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    for name in ("ridge", "fld", "srnet"):
        load(tmp_path / name)
    # an object array in weights.npz is refused (np.load with allow_pickle=False)
    np.savez(tmp_path / "ridge" / "weights.npz", mean=np.array([object()], dtype=object), scale=np.ones(1),
             coef=np.ones(1), intercept=np.float64(0))
    with pytest.raises(DetectorLoadError, match="cannot load the ridge detector"):
        load(tmp_path / "ridge")


def test_detector_folder_errors(tmp_path):
    with pytest.raises(DetectorLoadError, match="no detector.json"):
        load(tmp_path)
    (tmp_path / "detector.json").write_text(json.dumps({"type": "svm"}))
    with pytest.raises(DetectorLoadError, match="unknown detector type"):
        load(tmp_path)


# ------------------------------------------------------------------------------------- metrics

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 200), st.integers(1, 200), st.booleans())
def test_tpr_at_fpr_agrees_with_sklearn_roc_curve(seed, n_clean, n_adv, coarse):
    from sklearn.metrics import roc_curve

    g = np.random.default_rng(seed)
    clean, adv = g.normal(size=n_clean), g.normal(0.7, 1.0, size=n_adv)
    if coarse:  # many ties
        clean, adv = np.round(clean, 1), np.round(adv, 1)
    tau = threshold_at_fpr(clean)
    assert tau == np.quantile(clean, 0.95)
    tpr = tpr_at_fpr(clean, adv)
    fpr_sk, tpr_sk, thr_sk = roc_curve(np.r_[np.zeros(n_clean), np.ones(n_adv)], np.r_[clean, adv],
                                       drop_intermediate=False)
    above = thr_sk > tau  # sklearn flags score >= t; the smallest t > τ flags exactly score > τ
    i = np.flatnonzero(above)[-1] if above.any() else None
    expected_tpr = tpr_sk[i] if i is not None else 0.0
    expected_fpr = fpr_sk[i] if i is not None else 0.0
    assert tpr == pytest.approx(expected_tpr)
    assert expected_fpr <= 0.05 + 0.95 / n_clean + 1e-12  # the interpolated quantile: at most one more
    from sklearn.metrics import roc_auc_score
    assert auc(clean, adv) == pytest.approx(roc_auc_score(np.r_[np.zeros(n_clean), np.ones(n_adv)],
                                                          np.r_[clean, adv]))


def test_tie_convention_and_p_fool_both(tmp_path):
    clean = np.arange(100.0)            # τ = 94.05
    assert tpr_at_fpr(clean, np.array([94.05, 94.06, 200.0])) == pytest.approx(2 / 3)  # equal to τ: not detected
    assert tpr_at_fpr(np.zeros(10), np.zeros(5)) == 0.0                                # all tied: none detected
    assert p_fool_both(0.985, 0.831) == pytest.approx(0.985 * 0.169)
    success = np.array([True, True, False, True])
    adv = np.array([0.0, 5.0, 0.0, 1.0])
    assert p_fool_both_direct(success, adv, threshold=1.0) == pytest.approx(0.5)  # rows 0 and 3
    with pytest.raises(ValueError):
        p_fool_both(1.2, 0.5)
    roc = roc_points(clean, clean + 50)
    assert roc.fpr[0] == 0 and roc.tpr[-1] == 1 and np.all(np.diff(roc.fpr) >= 0)
    png = plot_roc({"x": (clean, clean + 50)}, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------- SRNet

def test_srnet_shapes_and_size():
    net = SRNet(3)
    assert sum(p.numel() for p in net.parameters()) == 4_780_770  # ~4.78 M (regression guard; 3 input channels)
    assert len(net.layers) == 12  # layers 1-12 (the FC layer apart)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    assert net(torch.zeros(1, 3, 40, 24)).shape == (1, 2)
    with pytest.raises(ValueError, match="3, H, W"):
        net(torch.zeros(1, 1, 32, 32))


def test_lr_schedule_scales_100_plus_80():
    assert [lr_at(e, 180) for e in (0, 99, 100, 179)] == [1e-3, 1e-3, 1e-4, 1e-4]
    assert sum(lr_at(e, 18) == 1e-3 for e in range(18)) == 10
    assert lr_at(0, 1) == 1e-3


def test_pairwise_augmentation_is_the_same_for_cover_and_stego():
    g = torch.Generator().manual_seed(0)
    c = torch.arange(8 * 3 * 6 * 6, dtype=torch.float32).reshape(8, 3, 6, 6)
    s = c + 1000
    ac, as_ = augment_pairs(c, s, g)
    torch.testing.assert_close(as_, ac + 1000)
    assert not torch.equal(ac, c)  # some pairs were mirrored or rotated


def test_srnet_overfits_16_pairs(tmp_path):
    torch.manual_seed(0)
    g = np.random.default_rng(0)
    cover = _smooth(g, 16, 24)
    stego = _stego(g, cover, 16)  # strong ±16 noise: learnt in a few epochs
    result = train_srnet(cover, stego, epochs=6, device="cpu", seed=0, progress=False)
    assert [h["lr"] for h in result.history] == [1e-3] * 3 + [1e-4] * 3
    assert result.history[-1]["accuracy"] == 1.0   # training batches (batch statistics)
    det = SRNetDetector(result.model, device="cpu")
    clean, adv = det.score(cover), det.score(stego)
    assert adv.min() > clean.max()                 # eval mode (running statistics): perfectly ranked
    det.save(tmp_path / "srnet")
    assert sorted(p.name for p in (tmp_path / "srnet").iterdir()) == ["detector.json", "weights.safetensors"]
    np.testing.assert_array_equal(load(tmp_path / "srnet").score(cover), clean)


# ------------------------------------------------------------------------------------ pair sets

def _write_pairset(folder: Path, rows: list[str], header: str = "source,cover,adversarial,split",
                   make_files: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if make_files:
        for r in rows:
            for name in r.split(",")[1:3]:
                if name:
                    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / name)
    (folder / "pairs.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def test_srnet_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import advimage.detect.srnet as srnet_module

    rng = np.random.default_rng(0)
    cover = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    stego = np.clip(cover.astype(int) + rng.integers(-2, 3, cover.shape), 0, 255).astype(np.uint8)
    settings = dict(epochs=3, batch_pairs=4, device="cpu", seed=0, progress=False)
    full = train_srnet(cover, stego, **settings)
    save = srnet_module.save_checkpoint
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # after the second epoch's checkpoint
            raise KeyboardInterrupt
    monkeypatch.setattr(srnet_module, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_srnet(cover, stego, checkpoint=tmp_path / "ck", **settings)
    monkeypatch.setattr(srnet_module, "save_checkpoint", save)
    resumed = train_srnet(cover, stego, checkpoint=tmp_path / "ck", **settings)
    assert resumed.history == full.history
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="another SRNet training"):
        train_srnet(cover, stego, checkpoint=tmp_path / "ck", **{**settings, "epochs": 4})


def test_read_pairs_keeps_extra_columns(tmp_path):
    folder = _write_pairset(tmp_path / "p", ["a,c1.png,a1.png,train,fgsm,1", "b,c2.png,a2.png,test,pgd,0"],
                            header="source,cover,adversarial,split,attack,success")
    pairs = read_pairs(folder)
    assert [p.split for p in pairs] == ["train", "test"]
    assert pairs[0].cover == folder / "c1.png" and pairs[0].extra == {"attack": "fgsm", "success": "1"}
    assert [p.success for p in pairs] == [True, False]


@pytest.mark.parametrize("rows,header,match", [
    (["a,c1.png,a1.png,train"], "source,cover,split", "missing column.*adversarial"),
    (["a,c1.png,a1.png,train", "a,c2.png,a2.png,test"], None, "the same photo in train and test: source.* a"),
    (["a,c1.png,a1.png,validation"], None, "split must be train or test"),
    (["a,c1.png,gone.png,train"], None, "adversarial file .*gone.png not found"),
    (["a,c1.png,a1.png,train,maybe"], "source,cover,adversarial,split,success", "success must be"),
    ([], None, "no pairs"),
])
def test_read_pairs_errors(tmp_path, rows, header, match):
    folder = tmp_path / "p"
    _write_pairset(folder, rows, header or "source,cover,adversarial,split")
    (folder / "gone.png").unlink(missing_ok=True)
    with pytest.raises(PairSetError, match=match):
        read_pairs(folder)


def test_read_pairs_needs_pairs_csv(tmp_path):
    with pytest.raises(PairSetError, match="no pairs.csv"):
        read_pairs(tmp_path)


# ------------------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def pairset(tmp_path_factory):
    """2 train and 2 test pairs of 24×24 PNGs: adversarial = cover + ±8 noise; success 0, 1."""
    folder = tmp_path_factory.mktemp("pairset")
    g = np.random.default_rng(1)
    cover = _smooth(g, 4, 24)
    adv = _stego(g, cover, 8)
    rows = []
    for i in range(4):
        Image.fromarray(cover[i]).save(folder / f"c{i}.png")
        Image.fromarray(adv[i]).save(folder / f"a{i}.png")
        rows.append(f"photo{i},c{i}.png,a{i}.png,{'train' if i < 2 else 'test'},{i % 2}")
    (folder / "pairs.csv").write_text("source,cover,adversarial,split,success\n" + "\n".join(rows) + "\n")
    return folder


def test_cli_ridge_features_train_evaluate_score(pairset, tmp_path, capsys):
    assert main(["detect", "features", str(pairset), "--kind", "srm", "--processes", "2", "--quiet"]) == 0
    assert len(list((pairset / "features-cache" / "srm").glob("*.npy"))) == 8
    det = tmp_path / "ridge"
    assert main(["detect", "train", str(pairset), "--detector", "ridge", "--features", "srm", "--out", str(det),
                 "--quiet"]) == 0
    meta = json.loads((det / "detector.json").read_text())
    assert meta["type"] == "ridge" and meta["features"] == "srm" and meta["training"]["pairs"] == 2
    assert meta["versions"]["sealwatch"] == feat.sealwatch_version()
    capsys.readouterr()
    assert main(["detect", "evaluate", str(det), str(pairset), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| ridge | srm | 2 |" in out
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert ev["pairs"] == 2 and 0 <= ev["tpr"] <= 1 and ev["success_rate"] == 0.5
    assert ev["p_fool_both"] == pytest.approx(0.5 * (1 - ev["tpr"]))
    assert (tmp_path / "ev" / "roc.png").stat().st_size > 0 and (tmp_path / "ev" / "evaluation.md").exists()
    assert main(["detect", "score", str(det), str(pairset / "c2.png"), str(pairset / "a2.png"), "--json",
                 "--cache", str(pairset / "features-cache")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["c2.png", "a2.png"]
    np.testing.assert_allclose([r["score"] for r in rows], [ev["clean_scores"][0], ev["adv_scores"][0]])


def test_cli_srnet_train_score(pairset, tmp_path, capsys):
    det = tmp_path / "srnet"
    assert main(["detect", "train", str(pairset), "--detector", "srnet", "--epochs", "1", "--device", "cpu",
                 "--out", str(det), "--quiet", "--checkpoint", str(tmp_path / "ck")]) == 0
    assert json.loads((det / "detector.json").read_text())["params"]["train"]["epochs"] == 1
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["history"][0]["epoch"] == 1
    capsys.readouterr()
    assert main(["detect", "score", str(det), str(pairset / "a3.png"), "--json", "--device", "cpu"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["detect", "evaluate", str(det), str(pairset), "--device", "cpu", "--quiet"]) == 0
    assert (det / "evaluation" / "evaluation.json").exists()


@pytest.mark.parametrize("argv,match", [
    (["detect", "train", "{set}", "--detector", "srnet", "--features", "srm", "--out", "{tmp}/x"],
     "--features applies"),
    (["detect", "train", "{tmp}/none", "--out", "{tmp}/x"], "no pairs.csv"),
    (["detect", "score", "{tmp}", "{set}/c0.png"], "no detector.json"),
    (["detect", "train", "{set}", "--detector", "svm", "--out", "{tmp}/x"], "invalid choice"),
    (["detect", "evaluate", "{tmp}", "{set}", "--fpr", "1.5"], "rate in"),
])
def test_cli_bad_options_exit_2(pairset, tmp_path, capsys, argv, match):
    argv = [a.format(set=pairset, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_unreadable_file_exit_1(tmp_path, capsys):
    det = tmp_path / "d"
    SRNetDetector(SRNet(3), device="cpu").save(det)
    assert main(["detect", "score", str(det), str(tmp_path / "nothing.png"), "--device", "cpu"]) == 1
    assert "nothing.png" in capsys.readouterr().err
