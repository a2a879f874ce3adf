"""End to end through the command line: files in, verified adversarial files out."""

import json

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
    (folder / "labels.csv").write_text("filename,label\n" + "".join(f"{n},{i}\n" for i, n in enumerate(names))
                                       + "broken.png,1\n")
    return folder


def _independent_check(model, row, x0):
    """Decode the written file ourselves and re-run the model."""
    x = torch.from_numpy(np.asarray(Image.open(row["output"]).convert("RGB"))).permute(2, 0, 1).float()[None]
    pred = int(model(x).argmax(1))
    return pred, float(distortion(x, x0[None].float())[0])


@pytest.mark.parametrize("quantizer,suffix", [("smart", ".png"), ("round", ".png"), ("jpeg", ".jpg")])
def test_attack_writes_verified_files(image_set, tmp_path, tiny_registered, capsys, quantizer, suffix):
    from advimage.images import load_for_model
    from advimage.models import get

    out = tmp_path / "out"
    rc = main(["attack", str(image_set), "--model", tiny_registered, "--steps", "30", "--quantize", quantizer,
               "--out", str(out), "--json", "--no-figures", "--device", "cpu"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    broken = [r for r in rows if r["error"]]
    assert len(broken) == 1 and "broken.png" in broken[0]["error"]
    model = get(tiny_registered)
    for row in rows:
        if row["error"]:
            continue
        assert row["output"].endswith("_adv" + suffix) and row["output"].split("/")[-1].startswith("img")
        x0 = load_for_model(row["file"], model.config)
        pred, d = _independent_check(model, row, x0)
        assert pred == row["adversarial_label"]
        assert row["verified"] == (pred != row["label"])
        assert d == pytest.approx(row["distortion"], abs=1e-5)
    if quantizer != "round":
        assert all(r["verified"] for r in rows if not r["error"])


def test_lone_file_is_labelled_by_the_model(image_set, tmp_path, tiny_registered, capsys):
    out = tmp_path / "out"
    main(["attack", str(image_set / "img0.png"), "--model", tiny_registered, "--steps", "20", "--out", str(out),
          "--json", "--no-figures"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["label"] == row["original_prediction"] and row["verified"]


def test_targeted_attack(image_set, tmp_path, tiny_registered, capsys):
    main(["attack", str(image_set / "img1.png"), "--model", tiny_registered, "--steps", "40", "--target", "7",
          "--out", str(tmp_path / "o"), "--json", "--no-figures"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["verified"] and row["adversarial_label"] == 7


def test_unknown_names_are_refused_before_work(image_set, tmp_path):
    with pytest.raises(SystemExit, match="valid attacks: .*bp"):
        main(["attack", str(image_set), "--attack", "nope", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="efficientnet_lite0"):
        main(["attack", str(image_set), "--model", "nope", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["attack", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_demo_runs_the_real_model(tmp_path, capsys):
    """The README's main job, with a tiny budget: EfficientNet-Lite0 on scikit-image's photos."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "8", "--quiet"]) == 0
    text = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 5 and all(r["error"] is None for r in rows)
    assert sum(r["verified"] for r in rows) >= 3
    for r in rows:
        assert (out / f"{r['output'].split('/')[-1].replace('_adv.png', '_compare.png')}").exists()
    assert "verified" in text and "chelsea_adv.png" in text
