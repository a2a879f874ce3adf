"""End to end through the command line: files in, verified adversarial files out."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.cli import main
from advimage.distortion import distortion


@pytest.fixture
def image_set(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    g = np.random.default_rng(0)
    names = []
    for i in range(3):
        name = f"img{i}.png"
        Image.fromarray(g.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # labels: the tiny model's predictions at model size, except img2's (already misclassified)
    from advimage.images import load_for_model
    from conftest import build_tiny_classifier

    model = build_tiny_classifier()
    labels = [int(model(load_for_model(folder / n, model.config)[None].float()).argmax(1)) for n in names]
    labels[2] = (labels[2] + 1) % 10
    (folder / "labels.csv").write_text("filename,label\n" + "".join(f"{n},{y}\n" for n, y in zip(names, labels))
                                       + "broken.png,1\n")
    return folder


def _pixels(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()


@pytest.mark.parametrize("quantizer,suffix", [("smart", ".png"), ("round", ".png"), ("jpeg", ".jpg"), ("hill", ".png"),
                                             ("gina", ".png"), ("scaled", ".png"), ("lattice", ".png"),
                                             ("lattice-int", ".png")])
def test_model_size_writes_verified_files(image_set, tmp_path, tiny_registered, capsys, quantizer, suffix):
    from advimage.images import load_for_model
    from advimage.models import get

    out = tmp_path / "out"
    steps = {"lattice": 45, "lattice-int": 65}.get(quantizer, 30)  # the walks spend 31 and 50 of the gradients
    rc = main(["attack", str(image_set), "--model", tiny_registered, "--steps", str(steps), "--quantize", quantizer,
               "--size", "model", "--out", str(out), "--json", "--no-figures", "--device", "cpu"])
    assert rc == 1  # one input was unreadable: non-zero status, the others done
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    broken = [r for r in rows if r["status"] == "error"]
    assert len(broken) == 1 and "broken.png" in broken[0]["error"]
    model = get(tiny_registered)
    for row in rows:
        if row["status"] == "error":
            continue
        assert row["gradients"] <= steps  # the budget covers the quantizer's gradients
        assert isinstance(row["psnr"], float) or row["psnr"] is None
        if row["file"].endswith("img2.png"):  # misclassified original: not attacked, no file
            assert row["status"] == "misclassified" and row["output"] is None and row["distortion"] == 0
            continue
        if row["status"] != "fooled":
            assert row["output"] is None  # a failed image leaves no file
            continue
        assert row["output"].endswith("_adv" + suffix) and row["output"].split("/")[-1].startswith("img")
        x0 = load_for_model(row["file"], model.config).float()
        x = _pixels(row["output"])
        pred = int(model(x[None]).argmax(1))
        assert pred == row["adversarial_label"] and pred != row["label"]
        assert float(distortion(x[None], x0[None])[0]) == pytest.approx(row["distortion"], abs=1e-5)
    if quantizer != "round":
        assert [r["status"] for r in rows] == ["fooled", "fooled", "misclassified", "error"]


@pytest.mark.parametrize("options", [["--steps", "40"], ["--steps", "60", "--quantize", "lattice"],
                                     ["--steps", "70", "--quantize", "lattice-int"]])
def test_native_size_files_fool_both_real_pipelines(image_set, tmp_path, tiny_registered, capsys, options):
    """Default: the file keeps the original's size and fools the model after torchvision's eval
    transform on the PIL image (8-bit resize) and on the float tensor (also with the lattice walks,
    whose gradients go through both paths; the integer walk rounds its iterates at the native size)."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    from advimage.models import get

    out = tmp_path / "out"
    main(["attack", str(image_set / "img0.png"), str(image_set / "img2.png"), "--model", tiny_registered,
          *options, "--out", str(out), "--json", "--no-figures"])
    rows = json.loads(capsys.readouterr().out)
    model = get(tiny_registered)
    for row in rows:
        assert row["status"] == "fooled" and (row["width"], row["height"]) == (48, 40)
        img = Image.open(row["output"]).convert("RGB")
        assert img.size == (48, 40)
        pil = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(32)])(img)
        x_pil = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
        x_flt = TF.center_crop(TF.resize(_pixels(row["output"]), [32], antialias=True,
                                         interpolation=T.InterpolationMode.BILINEAR), [32, 32])
        for x in (x_pil, x_flt):
            assert int(model(x[None]).argmax(1)) != row["label"]
        assert row["verified_paths"] == {"float": True, "pil": True}
        assert row["distortion_model"] is not None and row["distortion"] > 0


def test_lone_file_is_labelled_by_the_model(image_set, tmp_path, tiny_registered, capsys):
    out = tmp_path / "out"
    main(["attack", str(image_set / "img0.png"), "--model", tiny_registered, "--steps", "20", "--out", str(out),
          "--json", "--no-figures", "--size", "model"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["label"] == row["original_prediction"] and row["status"] == "fooled"
    assert row["label_source"] == "model"


def test_targeted_attack(image_set, tmp_path, tiny_registered, capsys):
    main(["attack", str(image_set / "img1.png"), "--model", tiny_registered, "--steps", "40", "--target", "7",
          "--out", str(tmp_path / "o"), "--json", "--no-figures", "--size", "model"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "fooled" and row["adversarial_label"] == 7 and row["target"] == 7


def test_failed_targeted_attack_writes_no_file(image_set, tmp_path, tiny_registered, capsys):
    out = tmp_path / "o"
    main(["attack", str(image_set / "img1.png"), "--model", tiny_registered, "--steps", "2", "--target", "7",
          "--attack", "fgsm", "--out", str(out), "--json", "--no-figures", "--size", "model"])
    (row,) = json.loads(capsys.readouterr().out)
    if row["status"] == "failed":
        assert row["output"] is None and not list(out.glob("*_adv.*"))
    assert row["target"] == 7


def test_unknown_names_and_bad_options_are_refused_before_work(image_set, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["attack", str(image_set), "--attack", "nope", "--out", str(tmp_path / "o")])
    assert "valid attacks: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(image_set), "--model", "nope", "--out", str(tmp_path / "o")])
    assert "efficientnet_lite0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(SystemExit):
        main(["attack", str(image_set), "--out", str(afile)])
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(image_set), "--device", "tpu", "--out", str(tmp_path / "o")])
    assert "--device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(image_set), "--downscaler", "nope", "--out", str(tmp_path / "o")])
    assert "bilg" in capsys.readouterr().err


def test_missing_path_among_valid_files_is_an_error_row(image_set, tmp_path, tiny_registered, capsys):
    rc = main(["attack", str(image_set / "img0.png"), str(tmp_path / "gone.png"), "--model", tiny_registered,
               "--steps", "10", "--out", str(tmp_path / "o"), "--json", "--no-figures", "--size", "model"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 1 and [r["status"] for r in rows] == ["fooled", "error"] and "no such file" in rows[1]["error"]


def test_version_help_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "advimage", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("advimage ")
    helptext = subprocess.run([sys.executable, "-m", "advimage", "attack", "--help"], capture_output=True,
                              text=True).stdout
    assert "(default: 100)" in helptext and "--seed" in helptext and "--victim" in helptext


def test_demo_runs_the_real_model(tmp_path, capsys):
    """The README's main job, with a tiny budget: EfficientNet-Lite0 on scikit-image's photos."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "8", "--quiet", "--size", "model"]) == 0
    text = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 5 and all(r["error"] is None for r in rows)
    fooled = [r for r in rows if r["status"] == "fooled"]
    assert len(fooled) >= 3
    for r in fooled:
        assert (out / f"{r['output'].split('/')[-1].replace('_adv.png', '_compare.png')}").exists()
    assert "verified" in text and "chelsea_adv.png" in text


def test_native_size_jpeg_of_any_size(tmp_path, tiny_registered, capsys):
    g = np.random.default_rng(7)
    path = tmp_path / "odd.png"
    Image.fromarray(g.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(path)
    main(["attack", str(path), "--model", tiny_registered, "--steps", "30", "--quantize", "jpeg", "--quality", "90",
          "--out", str(tmp_path / "o"), "--json", "--no-figures"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["suffix"] == ".jpg" and row["compression_distortion"] > 0
    if row["status"] == "fooled":
        with Image.open(row["output"]) as img:
            assert img.format == "JPEG" and img.size == (45, 37)
        assert row["distortion"] >= 0.5 * row["compression_distortion"]
