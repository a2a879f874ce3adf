"""A label outside the model's classes is refused, naming its labels.csv line, before any work."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from advimage import attack
from advimage.bench import run_benchmark
from advimage.bench.runner import LabelsChangedError
from advimage.bench.store import ResultStore
from advimage.cli import main
from advimage.data import LabelError

BAD = ["5000", "-1", "n01530575", "n99999999"]  # n01530575 is ImageNet class 10; n99999999 is no class
COMMANDS = {
    "attack": ["attack", "{images}", "--model", "{model}", "--steps", "5"],
    "bench": ["bench", "{images}", "--models", "{model}", "--attacks", "bp", "--steps", "5"],
    **{name: ["experiment", name, "{images}", "--model", "{model}", "--steps", "5"]
       for name in ("quant-table", "jpeg-table", "jpeg-defense", "squeezing", "stego-table", "transfer-table",
                    "ensemble-table", "random-resize", "app-b")},
    "scaling-fig92": ["experiment", "scaling-fig92", "{images}", "--models", "{model}", "--steps", "5"],
}


def _image_set(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(len(labels)):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *((f"img{i}.png", y) for i, y in enumerate(labels))])
    return folder


def _refusal(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    return err


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_label_outside_the_model(command, bad, tmp_path, tiny_registered, capsys):
    images = _image_set(tmp_path / "set", ["0", bad])
    out = tmp_path / "out"
    argv = [a.format(images=images, model=tiny_registered) for a in COMMANDS[command]] + ["--out", str(out)]
    err = _refusal(argv, capsys)
    assert f"{images / 'labels.csv'}:3: label " in err
    assert ("neither a class index nor a known WordNet id" if bad == "n99999999"
            else f"is outside model {tiny_registered}'s 10 classes [0, 10)") in err
    assert not out.exists()


def test_api_attack_refuses_labels_outside_the_model(tiny_registered):
    from advimage import load_model

    model = load_model(tiny_registered, device="cpu")
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(LabelError, match=r"^y\[1\]: label 10 is outside the model's 10 classes \[0, 10\)$"):
        attack(model, x, torch.tensor([3, 10]), steps=2)
    with pytest.raises(LabelError, match="label -1 is outside"):
        attack(model, x, -1, steps=2)


def _labels_now(folder, labels):
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *((f"img{i}.png", y) for i, y in enumerate(labels))])


def test_bench_resume_refuses_a_store_measured_with_other_labels(tmp_path, tiny_registered, capsys):
    images = _image_set(tmp_path / "set", ["1", "2", "3"])
    out = tmp_path / "run"
    kw = dict(attacks="bp", steps=5, out=out, progress=False, gallery=0)
    run_benchmark(images, tiny_registered, **kw)
    run_benchmark(images, tiny_registered, resume=True, **kw)  # same labels: resumed
    with ResultStore(out) as st:
        before = (len(st), len(st.runs()))
    settings = (out / "settings.json").read_text()
    _labels_now(images, ["1", "2", "4"])
    with pytest.raises(LabelsChangedError, match=r"image 'img2.png' was measured with label 3, its label is now 4 "
                                                 rf"\({images / 'labels.csv'}:4\)"):
        run_benchmark(images, tiny_registered, resume=True, **kw)
    err = _refusal(["bench", str(images), "--models", tiny_registered, "--attacks", "bp", "--steps", "5",
                    "--out", str(out), "--resume", "--quiet"], capsys)
    assert "img2.png" in err and "its label is now 4" in err
    (images / "labels.csv").unlink()  # unlabelled files: the model's prediction is the label
    with pytest.raises(LabelsChangedError, match="image 'img0.png' was measured with label 1, its label is now none"):
        run_benchmark(images, tiny_registered, resume=True, **kw)
    with ResultStore(out) as st:
        assert (len(st), len(st.runs())) == before
    assert (out / "settings.json").read_text() == settings


def _thousand_classes(**_):
    """A 1000-class stand-in (no weights): one linear layer on the 32 px input."""
    from torch import nn

    from advimage.models import ModelConfig, PixelClassifier

    config = ModelConfig(name="tiny-1000", input_size=32, crop_pct=1.0, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=1000)
    torch.manual_seed(0)
    return PixelClassifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1000)), config)


@pytest.fixture
def thousand_registered():
    from advimage.models import register

    register("tiny-1000")(_thousand_classes)
    return "tiny-1000"


@pytest.mark.parametrize("command", ["attack", "demo"])
@pytest.mark.parametrize("fixture,target,classes", [("tiny_registered", 10, 10), ("tiny_registered", -1, None),
                                                     ("thousand_registered", 1000, 1000)])
def test_a_target_outside_the_model_is_refused_before_work(command, fixture, target, classes, tmp_path, capsys,
                                                           request):
    model = request.getfixturevalue(fixture)
    images = _image_set(tmp_path / "set", ["0", "1"])
    out = tmp_path / "out"
    argv = ([command] + ([str(images)] if command == "attack" else [])
            + ["--model", model, "--steps", "2", "--target", str(target), "--out", str(out)])
    err = _refusal(argv, capsys)
    if classes is None:
        assert err == f"advimage: --target {target}: a class index must be 0 or more"
    else:
        assert err == f"advimage: --target {target} is outside model {model}'s {classes} classes [0, {classes})"
    assert not out.exists()


@pytest.mark.parametrize("fixture,target", [("tiny_registered", 9), ("thousand_registered", 999)])
def test_the_last_class_is_a_valid_target(fixture, target, tmp_path, capsys, request):
    import json

    model = request.getfixturevalue(fixture)
    images = _image_set(tmp_path / "set", ["0"])
    main(["attack", str(images), "--model", model, "--steps", "2", "--target", str(target), "--json",
          "--no-figures", "--size", "model", "--out", str(tmp_path / "out")])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["target"] == target and row["status"] != "error"


def test_api_refuses_a_target_outside_the_model(tiny_registered, tmp_path):
    from advimage import Settings, attack_files, discover, load_model

    model = load_model(tiny_registered, device="cpu")
    x = torch.full((1, 3, 32, 32), 128.0)
    with pytest.raises(ValueError, match=rf"^y\[0\]: target 10 is outside model {tiny_registered}'s 10 classes "
                                         r"\[0, 10\)$"):
        attack(model, x, 10, steps=2, targeted=True)
    assert attack(model, x, 9, steps=2, targeted=True).x_adv.shape == x.shape
    items = discover([_image_set(tmp_path / "set", ["0"])])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"^target 10 is outside model {tiny_registered}'s 10 classes"):
        attack_files(model, items, out, Settings(steps=2, target=10), progress=False, figures=False)
    assert not out.exists()
    (row,) = attack_files(model, items, out, Settings(steps=2, target=9), progress=False, figures=False)
    assert row.target == 9 and row.status != "error"
