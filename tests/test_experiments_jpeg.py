"""The JPEG experiments (Tables 7.1 JPEG columns and 7.2) end to end on a tiny model and 32x32 images.

Every verdict the experiments report is checked here against the written files, decoded with
Pillow independently of advimage's own readers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("jpeglib")

from advimage import models
from advimage.distortion import distortion
from advimage.experiments import jpeg_defense, jpeg_table
from advimage.images import load_for_model, write_png
from advimage.jpeg.io import read_coefficients
from advimage.jpeg.transform import quant_tables
from advimage.models import ModelConfig, PixelClassifier

SIZE = 32  # a multiple of 8: no JPEG padding
STEPS = 10
QUALITIES = (90, 75)


class TinyNet(nn.Module):
    """Normalized pixels -> 10 logits; deterministic."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                                 nn.Linear(8 * (SIZE // 4) ** 2, 10))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@models.register("tiny-jpeg-test")
def tiny_jpeg_test(**_) -> PixelClassifier:
    """Test model: one convolution, 10 classes (the JPEG experiment tests)."""
    config = ModelConfig(name="tiny-jpeg-test", input_size=SIZE, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3,
                         num_classes=10)
    return PixelClassifier(TinyNet(), config)


def pillow_pixels(path) -> torch.Tensor:
    """Decode any image file with Pillow directly: float (3, H, W)."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float()


def pillow_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Plain 4:4:4 JPEG compression with Pillow directly: float (3, H, W) -> float (3, H, W)."""
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy().astype(np.uint8)).save(buf, "JPEG", quality=quality, subsampling=0)
    buf.seek(0)
    return pillow_pixels(buf)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three smooth 32x32 PNGs with labels.csv: two labelled with the model's prediction, one mislabelled."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("images")
    model = models.load_model("tiny-jpeg-test", device="cpu")
    g = torch.Generator().manual_seed(1)
    small = torch.rand(3, 3, 4, 4, generator=g) * 200 + 28
    x = nn.functional.interpolate(small, size=SIZE, mode="bilinear", align_corners=False).round()
    rows = []
    for i, img in enumerate(x):
        name = f"img{i}.png"
        write_png(folder / name, img.to(torch.uint8))
        pred = int(model.predict(load_for_model(folder / name, model.config)[None].float())[0])
        rows.append((name, pred if i < 2 else (pred + 1) % 10))
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "label"])
        w.writerows(rows)
    return folder, model


@pytest.fixture(scope="module")
def table(dataset, tmp_path_factory):
    folder, _ = dataset
    out = tmp_path_factory.mktemp("jpeg-table")
    summary = jpeg_table.run([str(folder)], out, "tiny-jpeg-test", steps=STEPS, qualities=QUALITIES, device="cpu",
                             batch_size=2, progress=False)
    return out, summary


def test_table_files_and_outputs(table):
    out, summary = table
    for name in ("rows.json", "summary.json", "table.md"):
        assert (out / name).is_file()
    assert json.loads((out / "summary.json").read_text())["per_quality"].keys() == summary["per_quality"].keys()
    rows = json.loads((out / "rows.json").read_text())
    assert len(rows) == 3 * len(QUALITIES)
    for q in QUALITIES:
        for kind in jpeg_table.KINDS:
            assert sorted(p.name for p in (out / f"q{q}" / kind).glob("*.jpg")) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    md = (out / "table.md").read_text()
    assert "JPEG90" in md and "JPEG75" in md and "BPDA" in md


def test_table_verdicts_are_the_files(table, dataset):
    """Success and distortion of every row, recomputed from the files decoded by Pillow."""
    out, _ = table
    folder, model = dataset
    rows = json.loads((out / "rows.json").read_text())
    for r in rows:
        x0 = load_for_model(folder / r["image"], model.config).float()[None]
        y = torch.tensor([r["label"]])
        assert r["correct"] == bool(model.predict(x0)[0] == y[0])
        for kind in jpeg_table.KINDS:
            path = out / f"q{r['quality']}" / kind / r["image"].replace(".png", ".jpg")
            x = pillow_pixels(path)[None]
            assert r[f"{kind}_success"] == bool(model.predict(x)[0] != y[0]), (kind, r)
            assert r[f"{kind}_distortion"] == pytest.approx(float(distortion(x, x0)[0]), rel=1e-5)
        # our file is a 4:4:4 JPEG carrying the tables of its quality factor
        jc = read_coefficients(out / f"q{r['quality']}" / "ours" / r["image"].replace(".png", ".jpg"))
        assert torch.equal(jc.tables, quant_tables(r["quality"]).to(jc.tables.dtype))
        # the plain file is Pillow's own compression of x0
        plain = pillow_pixels(out / f"q{r['quality']}" / "plain" / r["image"].replace(".png", ".jpg"))
        assert torch.equal(plain, pillow_jpeg(x0[0], r["quality"]))
        # protocol 7.4.1: no attack where the plain JPEG already fools the model, and then the file is the plain one
        assert r["attacked"] == (not r["plain_success"])
        if not r["attacked"]:
            ours = (out / f"q{r['quality']}" / "ours" / r["image"].replace(".png", ".jpg")).read_bytes()
            assert ours == (out / f"q{r['quality']}" / "plain" / r["image"].replace(".png", ".jpg")).read_bytes()
            assert r["ours_gradients"] == 0
        else:
            assert 1 <= r["ours_gradients"] <= STEPS + 1


def test_table_summary_consistent(table):
    out, summary = table
    rows = json.loads((out / "rows.json").read_text())
    assert summary["images"] == 3
    for q in QUALITIES:
        rq = [r for r in rows if r["quality"] == q]
        s = summary["per_quality"][str(q)]
        correct = [r for r in rq if r["correct"]]
        assert s["n"] == 3 and s["n_correct"] == len(correct) == 2  # img2 is mislabelled
        for kind in jpeg_table.KINDS:
            assert s[f"{kind}_accuracy"] == pytest.approx(sum(not r[f"{kind}_success"] for r in rq) / 3)
            assert s[f"{kind}_success"] == pytest.approx(sum(r[f"{kind}_success"] for r in correct) / 2)
            assert s[f"{kind}_mean_distortion"] == pytest.approx(sum(r[f"{kind}_distortion"] for r in rq) / 3)
        # the mislabelled image is fooled by every output, at the plain JPEG's distortion for ours
        bad = next(r for r in rq if not r["correct"])
        assert bad["plain_success"] and bad["ours_success"] and not bad["attacked"]
        # the tiny model is easy to fool: our quantized JPEGs succeed on every correct image
        assert s["ours_success"] == 1.0
        assert s["ours_mean_distortion"] >= s["plain_mean_distortion"] * 0.9
        assert math.isfinite(s["ours_over_plain_distortion"])


def test_defense_end_to_end(table, dataset, tmp_path):
    folder, model = dataset
    table_out, _ = table
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="experiment")
    jpeg_defense.add_parser(sub)
    jpeg_table.add_parser(sub)
    args = parser.parse_args(["jpeg-defense", str(folder), "--model", "tiny-jpeg-test", "--steps", str(STEPS),
                              "--qualities", "90,75", "--defense-qualities", "100,90,75,60", "--device", "cpu",
                              "--from-table", str(table_out), "--out", str(tmp_path), "--quiet"])
    assert args.experiment_main is jpeg_defense.main
    assert args.experiment_main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert summary["sources"] == ["none", "spatial", "jpeg90", "jpeg75"]
    assert len(rows) == 3 * 4
    assert sorted(p.name for p in (tmp_path / "spatial").glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    assert not (tmp_path / "q90").exists()  # the table's JPEG files were reused
    table_rows = {(r["image"], r["quality"]): r for r in json.loads((table_out / "rows.json").read_text())}
    for r in rows:
        x0 = load_for_model(folder / r["image"], model.config).float()
        x = x0 if r["source"] == "none" else pillow_pixels(r["file"])
        assert r["fooled"]["none"] == bool(model.predict(x[None])[0] != r["label"])
        for q in (100, 90, 75, 60):  # the defense, redone with Pillow by hand
            assert r["fooled"][f"jpeg{q}"] == bool(model.predict(pillow_jpeg(x, q)[None])[0] != r["label"]), (r, q)
        if r["source"].startswith("jpeg"):
            t = table_rows[(r["image"], int(r["source"][4:]))]
            assert r["fooled"]["none"] == t["ours_success"]
            assert r["distortion"] == pytest.approx(t["ours_distortion"], rel=1e-5)
        if r["source"] == "spatial" and r["correct"]:
            assert r["fooled"]["none"]  # smart spatial quantization keeps the tiny model fooled
    for src in summary["sources"]:
        rs = [r for r in rows if r["source"] == src]
        for d in summary["defenses"]:
            assert summary["accuracy"][src][d] == pytest.approx(sum(not r["fooled"][d] for r in rs) / 3)
    assert "JPEG60" in (tmp_path / "table.md").read_text()


def test_parsers_and_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="experiment")
    jpeg_table.add_parser(sub)
    args = parser.parse_args(["jpeg-table", "imgs", "--qualities", "95,60", "--df", "inf"])
    assert args.qualities == (95, 60) and args.df == math.inf and args.steps == 100 and args.baseline == "pgd"
    assert args.experiment_main is jpeg_table.main
    with pytest.raises(SystemExit):
        parser.parse_args(["jpeg-table", "imgs", "--qualities", "0"])
    args = parser.parse_args(["jpeg-table", "imgs", "--attack", "nope"])
    with pytest.raises(SystemExit) as e:
        jpeg_table.main(args)
    assert e.value.code == 2 and "unknown attack 'nope'" in capsys.readouterr().err


def run_cli(argv: list[str]) -> int:
    """``advimage ARGV`` in process (the tiny model is registered here); returns the exit status."""
    from advimage import cli

    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 1


def defense_argv(folder, out, *extra: str) -> list[str]:
    return ["experiment", "jpeg-defense", str(folder), "--model", "tiny-jpeg-test", "--steps", str(STEPS),
            "--qualities", "90,75", "--defense-qualities", "100,75", "--device", "cpu", "--out", str(out),
            "--quiet", *extra]


def no_attack(*_, **__):
    raise AssertionError("the spatial attack ran although --spatial-from was given")


def test_spatial_from_missing_folder_refused(dataset, tmp_path, capsys, monkeypatch):
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "spatial_adversarials", no_attack)
    out = tmp_path / "run"
    code = run_cli(defense_argv(folder, out, "--spatial-from", str(tmp_path / "nowhere")))
    err = capsys.readouterr().err
    assert code == 2
    assert "nowhere: no such folder" in err and "advimage experiment jpeg-defense" in err
    assert not out.exists()  # refused before anything is written


def test_spatial_from_missing_files_refused(dataset, tmp_path, capsys, monkeypatch):
    """A folder lacking files (e.g. quant-table's, which holds no PNGs) is refused, naming the missing
    files and the command that makes them, not silently completed."""
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "spatial_adversarials", no_attack)
    spatial = tmp_path / "spatial"
    spatial.mkdir()
    write_png(spatial / "img1.png", torch.zeros(3, SIZE, SIZE, dtype=torch.uint8))
    out = tmp_path / "run"
    code = run_cli(defense_argv(folder, out, "--spatial-from", str(spatial)))
    err = capsys.readouterr().err
    assert code == 2
    assert "2 of 3 spatial PNGs missing (img0.png, img2.png)" in err
    assert "img1.png" not in err.split("missing")[1].split(";")[0]
    assert "advimage experiment jpeg-defense IMAGES --out RUN" in err and "RUN/spatial/<stem>.png" in err
    assert not out.exists()
    with pytest.raises(jpeg_defense.SpatialFilesError):  # the same refusal from Python
        jpeg_defense.run([str(folder)], out, "tiny-jpeg-test", steps=STEPS, device="cpu", spatial_from=spatial,
                         progress=False)


def test_spatial_from_wrong_size_refused(dataset, tmp_path, capsys, monkeypatch):
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "spatial_adversarials", no_attack)
    spatial = tmp_path / "spatial"
    for i in range(3):
        write_png(spatial / f"img{i}.png", torch.zeros(3, SIZE, SIZE + 8 * (i == 2), dtype=torch.uint8))
    code = run_cli(defense_argv(folder, tmp_path / "run", "--spatial-from", str(spatial)))
    err = capsys.readouterr().err
    assert code == 2 and f"img2.png is {SIZE + 8}x{SIZE}, the model's input {SIZE}x{SIZE}" in err


def test_spatial_from_reuses_the_files(dataset, table, tmp_path, monkeypatch):
    """Present files are used as they are: no attack, no out/spatial/, every verdict and distortion
    that of the given file, recomputed here with numpy and Pillow."""
    folder, model = dataset
    table_out, _ = table
    monkeypatch.setattr(jpeg_defense, "spatial_adversarials", no_attack)
    spatial = tmp_path / "given"
    given = {}
    for i in range(3):  # files no attack would make: the negative of x0, and one of them a flat grey
        x0 = load_for_model(folder / f"img{i}.png", model.config)
        given[f"img{i}.png"] = torch.full_like(x0, 128) if i == 1 else 255 - x0
        write_png(spatial / f"img{i}.png", given[f"img{i}.png"])
    out = tmp_path / "run"
    assert run_cli(defense_argv(folder, out, "--spatial-from", str(spatial), "--from-table", str(table_out))) == 0
    assert not (out / "spatial").exists() and not (out / "q90").exists()
    rows = [r for r in json.loads((out / "rows.json").read_text()) if r["source"] == "spatial"]
    assert sorted(r["image"] for r in rows) == ["img0.png", "img1.png", "img2.png"]
    for r in rows:
        assert r["file"] == str(spatial / r["image"])
        x = pillow_pixels(spatial / r["image"])
        assert torch.equal(x, given[r["image"]].float())
        x0 = np.asarray(Image.open(folder / r["image"]).convert("RGB"), dtype=np.float64)  # 32x32: no resize
        ref = np.sqrt(((x.permute(1, 2, 0).numpy() - x0) ** 2).mean())  # eq. 6.2
        assert r["distortion"] == pytest.approx(ref, rel=1e-5)
        assert r["fooled"]["none"] == bool(model.predict(x[None])[0] != r["label"])
        for q in (100, 75):
            assert r["fooled"][f"jpeg{q}"] == bool(model.predict(pillow_jpeg(x, q)[None])[0] != r["label"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spatial_from"] == str(spatial)
    assert summary["mean_distortion"]["spatial"] == pytest.approx(sum(r["distortion"] for r in rows) / 3)


def no_jpeg_attack(*_, **__):
    raise AssertionError("the JPEG attack ran although --from-table was given")


def table_copy(table_out, dest):
    """The ``q<Q>/ours/`` files of a jpeg-table run, copied to ``dest`` to be damaged."""
    for q in QUALITIES:
        shutil.copytree(table_out / f"q{q}" / "ours", dest / f"q{q}" / "ours")
    return dest


def test_from_table_missing_folder_refused(dataset, tmp_path, capsys, monkeypatch):
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "jpeg_adversarials", no_jpeg_attack)
    out = tmp_path / "run"
    code = run_cli(defense_argv(folder, out, "--from-table", str(tmp_path / "nowhere")))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "nowhere: no such folder" in err and "advimage experiment jpeg-table IMAGES --qualities 90,75" in err
    assert not out.exists()


def test_from_table_missing_files_refused(dataset, table, tmp_path, capsys, monkeypatch):
    """A table folder lacking files (another --limit, another --qualities) is refused, naming the
    missing files and the command that makes them, not silently completed."""
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "jpeg_adversarials", no_jpeg_attack)
    given = table_copy(table[0], tmp_path / "table")
    (given / "q75" / "ours" / "img2.jpg").unlink()
    (given / "q90" / "ours" / "img0.jpg").unlink()
    out = tmp_path / "run"
    code = run_cli(defense_argv(folder, out, "--from-table", str(given)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "2 of 6 JPEG files missing (q90/ours/img0.jpg, q75/ours/img2.jpg)" in err
    assert "RUN/q<Q>/ours/<stem>.jpg" in err and "drop --from-table" in err
    assert not out.exists()
    with pytest.raises(jpeg_defense.TableFilesError, match=r"3 of 3 JPEG files missing \(q60/ours/img0.jpg"):
        jpeg_defense.run([str(folder)], out, "tiny-jpeg-test", steps=STEPS, qualities=(60,), device="cpu",
                         from_table=table[0], progress=False)
    assert not out.exists()


@pytest.mark.parametrize("damage,words", [
    ("size", f"img1.jpg is {SIZE + 8}x{SIZE}, the model's input {SIZE}x{SIZE}"),
    ("png", "img1.jpg is a PNG file, not a JPEG"),
    ("truncated", "img1.jpg is not a readable image"),
])
def test_from_table_invalid_file_refused(dataset, table, tmp_path, capsys, monkeypatch, damage, words):
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "jpeg_adversarials", no_jpeg_attack)
    monkeypatch.setattr(jpeg_defense, "spatial_adversarials", no_attack)
    given = table_copy(table[0], tmp_path / "table")
    bad = given / "q75" / "ours" / "img1.jpg"
    if damage == "size":
        Image.new("RGB", (SIZE + 8, SIZE)).save(bad, "JPEG")
    elif damage == "png":
        Image.new("RGB", (SIZE, SIZE)).save(bad, "PNG")
    else:
        bad.write_bytes(bad.read_bytes()[:40])
    out = tmp_path / "run"
    code = run_cli(defense_argv(folder, out, "--from-table", str(given)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert f"--from-table {given / 'q75' / 'ours'}: " in err
    assert not out.exists()


def test_from_table_reuses_every_file(dataset, table, tmp_path, monkeypatch):
    """A complete folder is used as it is: no JPEG attack, no out/q<Q>/, every file the table's."""
    folder, _ = dataset
    monkeypatch.setattr(jpeg_defense, "jpeg_adversarials", no_jpeg_attack)
    given = table_copy(table[0], tmp_path / "table")
    out = tmp_path / "run"
    assert run_cli(defense_argv(folder, out, "--from-table", str(given))) == 0
    assert not (out / "q90").exists() and not (out / "q75").exists()
    rows = [r for r in json.loads((out / "rows.json").read_text()) if r["source"].startswith("jpeg")]
    assert sorted((r["source"], r["file"]) for r in rows) == sorted(
        (f"jpeg{q}", str(given / f"q{q}" / "ours" / f"img{i}.jpg")) for q in QUALITIES for i in range(3))
