"""Image scale (thesis Ch. 9): downscaler geometry (D Dᵀ), references, the ensemble's gradient
aggregation, the ensemble through the engine, the random-resize defense, Fig. 9.2 and the
experiments on small synthetic images."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from advimage.codec import decode
from advimage.criteria import AllPaths, Misclassification
from advimage.data import ImageItem
from advimage.defenses.random_resize import RandomResizeDefense
from advimage.engine import Settings, run_batch
from advimage.models import ModelConfig, PixelClassifier
from advimage.models.protocol import MultiPathClassifier, ResizedClassifier
from advimage.oracle import LossOracle
from advimage.resize import DOWNSCALERS, downscale


def matrix(method: str, large: int, small: int) -> torch.Tensor:
    """D as a (small², large²) matrix: the downscaler applied to every basis image."""
    basis = torch.eye(large * large, dtype=torch.float64).view(-1, 1, large, large)
    return downscale(basis, small, method).reshape(large * large, small * small).T


@pytest.mark.parametrize("method, gain", [("nearest", 1.0), ("bilinear", 1.0), ("bicubic", 1.0),
                                          ("area", 1 / 9), ("bilag", 1 / 9)])
def test_integer_factor_gives_d_dt_proportional_to_identity(method, gain):
    """§9.3.2: with an integer (odd) factor, D Dᵀ = (Σδ²) I: the step stays aligned."""
    D = matrix(method, 12, 4)
    assert torch.allclose(D @ D.T, gain * torch.eye(16, dtype=torch.float64), atol=1e-12)


def test_antialiasing_or_fractional_factor_misaligns_the_step():
    """BilG (overlapping Gaussian) and bilinear at 600 → 224-like ratios: D Dᵀ is not ∝ I;
    nearest still gives I (each output copies a distinct pixel)."""
    for method, large, small in (("bilg", 12, 4), ("bilinear", 15, 7), ("bicubic", 15, 7), ("area", 15, 7)):
        G = matrix(method, large, small) @ matrix(method, large, small).T
        scaled_identity = G.diagonal().mean() * torch.eye(len(G), dtype=G.dtype)
        assert (G - scaled_identity).abs().max() > 1e-3 * G.diagonal().mean(), method
    D = matrix("nearest", 15, 7)
    assert torch.allclose(D @ D.T, torch.eye(49, dtype=torch.float64))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
def test_interpolating_downscalers_match_torchvision_without_antialias(method):
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = torch.rand(2, 3, 30, 27, dtype=torch.float64) * 255
    ref = TF.resize(x, [11, 13], interpolation=InterpolationMode(method), antialias=False)
    assert torch.allclose(downscale(x, (11, 13), method), ref, atol=1e-9)


def test_area_with_integer_factor_matches_pillow_box_in_float_mode():
    """Pillow's BOX filter on a 32-bit float image (mode F, no 8-bit rounding) is the average of
    each k×k block for an integer factor: an independent reference for Area."""
    rng = np.random.default_rng(0)
    a = (rng.random((24, 18)) * 255).astype(np.float32)
    ref = np.asarray(Image.fromarray(a, mode="F").resize((6, 8), Image.BOX), dtype=np.float64)
    ours = downscale(torch.from_numpy(a.astype(np.float64))[None, None], (8, 6), "area")[0, 0].numpy()
    assert np.allclose(ours, ref, atol=1e-3)


# -- ensemble ------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1))


def small_classifier() -> PixelClassifier:
    config = ModelConfig(name="small", input_size=16, crop_pct=1.0, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=5)
    return PixelClassifier(_Net(), config, [f"c{i}" for i in range(5)]).eval()


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 255
    return nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255).round()


@pytest.mark.parametrize("aggregation", ["avg", "worst", "max"])
def test_ensemble_gradient_aggregation_matches_per_member_autograd(aggregation):
    base = small_classifier()
    x = smooth_images(3, 40)
    y = torch.tensor([0, 1, 2])
    ens = MultiPathClassifier(base, list(DOWNSCALERS), aggregation=aggregation, crop_pct=1.0)
    oracle = LossOracle(ens, AllPaths(Misclassification(y)))
    loss, grad, logits = oracle.loss_and_grad(x)
    losses, grads = [], []
    for m in DOWNSCALERS:  # each member on its own, by plain autograd
        xi = x.clone().requires_grad_(True)
        li = Misclassification(y).loss(ResizedClassifier(base, m, crop_pct=1.0)(xi))
        (gi,) = torch.autograd.grad(li.sum(), xi)
        losses.append(li.detach())
        grads.append(gi)
    L, G = torch.stack(losses, 1), torch.stack(grads, 1)
    assert torch.allclose(loss, L.amax(1), atol=1e-5)  # the value is always max_k L_k
    if aggregation == "avg":
        expected = G.mean(1)
    else:
        score = L / G.flatten(2).norm(dim=2) if aggregation == "worst" else L
        expected = G[torch.arange(3), score.argmax(1)]
    assert torch.allclose(grad, expected, atol=1e-5, rtol=1e-4)
    assert logits.shape == (3, 6, 5)
    assert oracle.gradients.tolist() == [1, 1, 1]


def test_ensemble_through_the_engine_fools_every_downscaler_from_the_file(tmp_path):
    base = small_classifier()
    x = smooth_images(2, 48, seed=1)
    items = []
    for i, img in enumerate(x):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy().astype(np.uint8)).save(p)
        items.append(ImageItem(p))
    for aggregation in ("avg", "worst"):
        settings = Settings(attack="bp", steps=40, ensemble=aggregation, crop_pct=1.0)
        rows = run_batch(base, items, settings)
        assert all(r.status == "fooled" for r in rows), [r.status for r in rows]
        for r in rows:
            assert set(r.verified_paths) == set(DOWNSCALERS)
            xf = decode(r.data, r.suffix).float()[None]
            for m in DOWNSCALERS:  # independently of the engine: every member misclassifies the decoded file
                assert int(ResizedClassifier(base, m, crop_pct=1.0)(xf).argmax(1)) != r.label, (aggregation, m)


def test_ensemble_settings_are_checked():
    with pytest.raises(ValueError, match="aggregation"):
        Settings(ensemble="median")
    with pytest.raises(ValueError, match="native"):
        Settings(ensemble="avg", size="model")
    with pytest.raises(ValueError, match="gradient attack"):
        Settings(ensemble="avg", attack="surfree")
    with pytest.raises(ValueError, match="crop_pct"):
        Settings(crop_pct=1.5)
    assert Settings(ensemble="avg").identity()["ensemble"] == "avg"
    assert Settings(ensemble="avg").verification_paths == DOWNSCALERS


# -- random resize ---------------------------------------------------------------------------------
def test_random_resize_uses_the_drawn_downscaler_for_each_image():
    base = small_classifier()
    defense = RandomResizeDefense(base, crop_pct=1.0)
    x = smooth_images(24, 40, seed=2)
    torch.manual_seed(0)
    logits = defense(x)
    choice = defense.front.last_choice
    assert set(choice.tolist()) == set(range(6))  # 24 draws cover the six (seed fixed)
    for i in range(len(x)):
        ref = ResizedClassifier(base, DOWNSCALERS[int(choice[i])], crop_pct=1.0)(x[i:i + 1])
        assert torch.allclose(logits[i], ref[0], atol=1e-5)
    torch.manual_seed(0)
    assert torch.equal(defense(x), logits)  # torch's generator makes it repeatable


def test_random_resize_spec_and_intermediate_size(tiny_registered):
    from advimage.specs import load_classifier

    model = load_classifier(f"{tiny_registered}+random-resize:8", device="cpu")
    assert isinstance(model, RandomResizeDefense) and model.front.intermediate == 8
    x = torch.rand(3, 3, 32, 32) * 255  # already at the model's size: the intermediate size still acts
    assert model(x).shape == (3, 10)
    with pytest.raises(ValueError, match="intermediate"):
        RandomResizeDefense(small_classifier(), intermediate=-1)


# -- Fig. 9.2 and the experiments ------------------------------------------------------------------
def test_kappa_and_slope():
    from advimage.experiments.scaling_fig92 import kappa, slope

    assert kappa(0.5) == pytest.approx(math.sqrt(2 * math.log(2)) + math.sqrt(math.pi / 2))
    assert kappa(0.0) == pytest.approx(math.sqrt(math.pi / 2))
    with pytest.raises(ValueError):
        kappa(1.0)
    assert slope([1, 2, 3], [2, 1.5, 1]) == pytest.approx(-0.5)
    assert math.isnan(slope([1, 1], [0, 1]))


def test_distortion_at_ninety_percent():
    from advimage.experiments.scaling import AttackRow, distortion_at

    def row(d, ok):
        return AttackRow(image="i", label=0, config="area", status="fooled" if ok else "failed",
                         float_distortion=d, file_distortion=d,
                         float_fooled={"area": ok}, file_fooled={"area": ok})
    rows = [row(0.1 * (i + 1), True) for i in range(9)] + [row(5.0, False)]
    assert distortion_at(rows, "file", 0.9) == pytest.approx(0.9)
    assert distortion_at(rows, "file", 1.0) == math.inf
    assert distortion_at(rows, "float", 0.5) == pytest.approx(0.5)


def test_base_image_is_the_bilinear_centre_square(tmp_path):
    from advimage.experiments.scaling import base_image

    a = (np.random.default_rng(0).random((90, 150, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "w.png")
    ref = Image.fromarray(a[:, 30:120]).resize((600, 600), Image.BILINEAR)
    assert np.array_equal(np.asarray(base_image(tmp_path / "w.png")), np.asarray(ref))


def test_transfer_and_ensemble_experiments_end_to_end(tmp_path, tiny_registered, capsys):
    """The experiments' files and tables on 2 synthetic images with the tiny registered model."""
    from advimage.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "run"
    common = [str(folder), "--model", tiny_registered, "--steps", "6", "--limit", "2", "--out", str(out), "--quiet",
              "--base-size", "64"]
    assert main(["experiment", "transfer-table", *common]) == 0
    for kind in ("file", "float"):
        with open(out / f"table92_{kind}.csv") as f:
            table = list(csv.reader(f))
        assert table[0][1:] == ["bilinear", "bicubic", "area", "nearest", "bilg", "bilag"] and len(table) == 7
        assert (out / f"table92_{kind}.png").stat().st_size > 0
    assert "Mean distortion of the images whose PNG fools" in (out / "table92.md").read_text()
    assert len(list((out / "attacks" / "nearest").glob("*.png"))) <= 2
    with pytest.raises(SystemExit) as e:
        main(["experiment", "ensemble-table", *common])
    assert e.value.code == 2 and re.search("--resume", capsys.readouterr().err)
    assert main(["experiment", "ensemble-table", *common, "--resume", "--configs", "nearest,ens-worst"]) == 0
    assert (out / "table91.md").is_file() and (out / "table91_curves.png").is_file()
    assert main(["experiment", "random-resize", *common, "--resume", "--configs", "nearest,ens-worst",
                 "--draws", "2"]) == 0
    assert "random resize, six (expectation)" in (out / "random_resize.md").read_text()


def test_mean_distortion_fooled_averages_only_images_whose_png_fooled_the_config():
    from advimage.experiments.scaling import AttackRow, mean_distortion_fooled

    rows = {"nearest": [AttackRow("a", 0, "nearest", "fooled", float_distortion=0.1, file_distortion=0.3),
                        AttackRow("b", 0, "nearest", "fooled", float_distortion=0.2, file_distortion=0.5),
                        AttackRow("c", 0, "nearest", "failed", float_distortion=9.0, file_distortion=9.0)],
            "area": [AttackRow("a", 0, "area", "misclassified")]}
    got = mean_distortion_fooled(rows, ("nearest", "area"))
    assert got["nearest"] == (2, pytest.approx(0.15), pytest.approx(0.4))
    assert got["area"][0] == 0 and math.isnan(got["area"][1])


def test_experiment_refuses_steps_within_the_quantizers_budget_before_writing(tmp_path, capsys):
    """--steps must leave the attack gradients after the quantizer's: a clear error, no folder made."""
    from advimage.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["experiment", "transfer-table", str(tmp_path), "--steps", "50", "--quantize", "lattice-int",
              "--out", str(out), "--quiet"])
    assert e.value.code == 2 and re.search("steps must exceed the quantizer's 50 gradient", capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("method", ["bilag", "bilg"])
@pytest.mark.parametrize("size", [(20, 15), (61, 20), (70, 50)])
def test_prefiltered_downscalers_as_matrices_equal_filter_then_bilinear(method, size):
    """BilAg/BilG run as one matrix per axis; the same map as the separable filter (reflect
    padding) followed by bilinear interpolation, including axes that do not shrink."""
    import torch.nn.functional as F

    from advimage.resize import _prefilter

    x = torch.rand(2, 3, 61, 47, dtype=torch.float64) * 255
    ref = F.interpolate(_prefilter(x, size, gaussian=(method == "bilg")), size=size, mode="bilinear",
                        align_corners=False, antialias=False)
    assert torch.allclose(downscale(x, size, method), ref, atol=1e-9)


def test_random_resize_expectations_over_a_pool():
    from advimage.experiments.scaling import AttackRow, expected_clean_accuracy, expected_success_vs_random_resize

    clean = {m: True for m in DOWNSCALERS}
    fooled = {m: m in ("nearest", "bilinear", "bicubic") for m in DOWNSCALERS}  # fools 3 of 6
    rows = [AttackRow(image="a", label=0, config="nearest", status="fooled", clean=dict(clean),
                      file_fooled=fooled, float_fooled=fooled),
            AttackRow(image="b", label=0, config="nearest", status="fooled", clean={**clean, "bilg": False},
                      file_fooled={m: False for m in DOWNSCALERS}, float_fooled={m: False for m in DOWNSCALERS})]
    assert expected_clean_accuracy(rows) == pytest.approx(100 * (1 + 5 / 6) / 2)
    assert expected_clean_accuracy(rows, ("nearest", "area")) == pytest.approx(100.0)
    assert expected_success_vs_random_resize(rows) == pytest.approx(100 * (0.5 + 0) / 2)
    assert expected_success_vs_random_resize(rows, pool=("nearest", "area")) == pytest.approx(100 * (0.5 + 0) / 2)
    assert expected_success_vs_random_resize(rows, pool=("nearest",)) == pytest.approx(50.0)


# -- the store: resume after an interruption, refusal of other settings, outputs unchanged -----------
def _three_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


class _Killed(Exception):
    pass


def _same(a, b) -> bool:
    """Two row lists equal but for the wall time."""
    from dataclasses import asdict

    return [dict(asdict(r), seconds=0) for r in a] == [dict(asdict(r), seconds=0) for r in b]


def test_scaling_resumes_from_the_store_after_an_interruption(tmp_path, tiny_registered, monkeypatch, capsys):
    from advimage.bench.store import ResultStore
    from advimage.cli import main
    from advimage.experiments import scaling

    folder = _three_images(tmp_path)
    kw = dict(model_name=tiny_registered, steps=6, limit=3, batch_size=1, base_size=64, progress=False)
    full = scaling.run_configs([str(folder)], tmp_path / "full", ["nearest"], **kw)["nearest"]
    assert len(full) == 3 and len({r.image for r in full}) == 3

    real, attacked, dying = scaling.run_batch, [], [True]

    def interrupted(model, batch, *args, **kwargs):
        attacked.extend(it.path.name for it in batch)
        if dying[0] and len(attacked) == 2:
            raise _Killed  # the process dies during the second batch
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(scaling, "run_batch", interrupted)
    cut = tmp_path / "cut"
    with pytest.raises(_Killed):
        scaling.run_configs([str(folder)], cut, ["nearest"], **kw)
    with ResultStore(cut) as store:
        assert len(store) == 1  # the first batch was committed, the second lost
    attacked.clear()
    dying[0] = False
    resumed = scaling.run_configs([str(folder)], cut, ["nearest"], **kw)["nearest"]
    assert sorted(attacked) == sorted(r.image for r in full[1:])  # only what the store lacked
    assert _same(resumed, full)
    scaling.ensemble_table({"nearest": full}, tmp_path / "full", tiny_registered)
    scaling.ensemble_table({"nearest": resumed}, cut, tiny_registered)
    for name in ("table91.md", "table91.csv", "table91.json"):
        assert (cut / name).read_text() == (tmp_path / "full" / name).read_text(), name

    # a store made with other settings is refused, --resume or not, before anything is attacked
    attacked.clear()
    common = [str(folder), "--model", tiny_registered, "--limit", "3", "--out", str(cut), "--quiet",
              "--base-size", "64", "--configs", "nearest", "--resume"]
    with pytest.raises(SystemExit) as e:
        main(["experiment", "ensemble-table", *common, "--steps", "7"])
    assert e.value.code == 2 and re.search("steps 6 .*asked: steps 7", capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        main(["experiment", "ensemble-table", *common, "--steps", "6", "--seed", "1"])
    assert e.value.code == 2 and re.search("seed 0 .*asked: seed 1", capsys.readouterr().err)
    with pytest.raises(scaling.SettingsMismatch, match="base_size"):
        scaling.run_configs([str(folder)], cut, ["nearest"], **dict(kw, base_size=48))
    assert attacked == []
    with pytest.raises(SystemExit) as e:
        main(["experiment", "ensemble-table", *common[:-1], "--steps", "6"])
    assert e.value.code == 2 and re.search("--resume", capsys.readouterr().err)


def test_scaling_imports_the_rows_of_an_earlier_version(tmp_path, tiny_registered, monkeypatch):
    """A folder of the JSONL version (rows.jsonl, flat settings.json) resumes from its rows."""
    import json
    import shutil
    from dataclasses import asdict

    from advimage.bench.store import DB_NAME
    from advimage.experiments import scaling

    folder = _three_images(tmp_path)
    kw = dict(model_name=tiny_registered, steps=6, limit=3, batch_size=2, base_size=64, progress=False)
    out = tmp_path / "run"
    full = scaling.run_configs([str(folder)], out, ["nearest"], **kw)["nearest"]
    old = tmp_path / "old"
    shutil.copytree(out / "bases", old / "bases")
    (old / "attacks" / "nearest").mkdir(parents=True)
    (old / "attacks" / "nearest" / "rows.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in full)
                                                            + '{"image": "cut')  # an interrupted line
    (old / "settings.json").write_text(json.dumps({"model": tiny_registered, "steps": 6, "seed": 0,
                                                   "base_size": 64, "quantizer": "smart"}))
    assert _same(scaling.load_rows(old, "nearest"), full)
    monkeypatch.setattr(scaling, "run_batch", lambda *a, **k: pytest.fail("attacked again"))
    again = scaling.run_configs([str(folder)], old, ["nearest"], **kw)["nearest"]
    assert (old / DB_NAME).is_file() and _same(again, full) and _same(scaling.load_rows(old, "nearest"), full)
