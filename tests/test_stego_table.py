"""``advimage experiment stego-table`` end to end on a tiny model: pairs split by photo, verified
files, features, detectors, Table 8.3/8.4 layout."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench_tiny
from advimage import codec
from advimage.cli import main
from advimage.models import load_model


def _photos(root: Path, n: int = 8) -> Path:
    """n smooth 56x48 photos with textures, labelled with the tiny model's prediction of their
    centre square at 32 px (what the experiment's first crop is); plus a corrupt one."""
    from advimage.experiments.stego_pairs import crop_boxes

    model = load_model(bench_tiny.TINY, device="cpu")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:56] / 48.0
    rows = []
    for i in range(n):
        c = rng.uniform(60, 195, (3, 1, 1))
        img = c + 30 * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0, 2) * yy)) \
            + rng.normal(0, 6, (3, 48, 56))
        pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(1, 2, 0))
        pil.save(root / f"photo{i}.png")
        centre = pil.crop(crop_boxes(56, 48, 1, 0)[0]).resize((32, 32), Image.LANCZOS)
        x = torch.from_numpy(np.asarray(centre).copy()).permute(2, 0, 1)[None].float()
        rows.append((f"photo{i}.png", int(model(x).argmax(1))))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows.append(("broken.png", 0))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *rows])
    return root


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    return _photos(folder)


def test_stego_table_end_to_end(photos, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken.png"):
        rc = main(["experiment", "stego-table", str(photos), "--model", bench_tiny.TINY, "--out", str(out),
                   "--size", "32", "--train-crops", "3", "--test-crops", "1", "--test-fraction", "0.4",
                   "--steps", "10", "--fgsm-steps", "10", "--quantizer-steps", "6", "--gina-steps", "2",
                   "--gina-train", "6", "--detectors", "ridge", "fld", "--fld-L", "5", "--fld-dsub", "200",
                   "--srnet-epochs", "1", "--adaptive", "srnet", "--adaptive-pairs", "2",
                   "--processes", "1", "--quiet", "--device", "cpu"])
    assert rc == 0
    crops = list(csv.DictReader(open(out / "crops.csv")))
    train_sources = {r["source"] for r in crops if r["split"] == "train"}
    test_sources = {r["source"] for r in crops if r["split"] == "test"}
    assert train_sources and test_sources and not train_sources & test_sources
    model = load_model(bench_tiny.TINY, device="cpu")
    summary = json.loads((out / "results.json").read_text())
    names = list(summary["variants"])
    assert "train-fgsm-smart-df1" in names and "train-fgsm-gina-df3" in names
    assert {f"test-pgd-{q}-df{d}" for q in ("smart", "hill", "mipod", "gina") for d in (1, 3)} <= set(names)
    for name in names:
        rows = list(csv.DictReader(open(out / "adv" / name / "rows.csv")))
        assert rows
        for r in rows:
            # only verified files are written; success is the file's, decided again here
            written = out / "adv" / name / f"{Path(r['file']).stem}_adv.png"
            assert written.exists() == bool(int(r["success"])) and r["output"] in ("", written.name)
            if not written.exists():
                continue
            x = codec.decode(written.read_bytes()).float()[None]
            assert model(x).argmax(1).item() != int(r["label"])
            x0 = codec.decode((out / "covers" / r["file"]).read_bytes()).float()
            assert float(r["l2"]) == pytest.approx(float((x[0] - x0).norm()), abs=1e-3)
        pairs = list(csv.DictReader(open(out / "sets" / name / "pairs.csv")))
        assert len(pairs) == sum(int(r["success"]) for r in rows)
    det = summary["detection"]
    for key in ("scrmq1/ridge/train-fgsm-smart-df1", "scrmq1/fld/train-fgsm-smart-df1",
                "scrmq1/ridge/train-fgsm-gina-df3"):
        entry = det[key]
        assert entry["fpr_clean"] <= 0.5
        assert all(v is None or 0 <= v <= 1 for v in entry["tpr5"].values())
    adaptive = {"test-pgd-smart-df1-vs-srnet-e1-b8-w1", "test-pgd-gina-df3-vs-srnet-e1-b8-w1"}
    assert adaptive <= set(names) and all(summary["variants"][n]["attacked"] == 2 for n in adaptive)
    assert set(det["adaptive"]) == adaptive and "srnet" in det["adaptive"][min(adaptive)]
    assert set(det["srnet"]["tpr5"]) == {n for n in names if n.startswith("test-")} - adaptive
    table = (out / "tables.md").read_text()
    assert "Table 8.3" in table and "Table 8.4" in table and "GINA" in table and "Adaptive attacker" in table
    assert table.count("Command: `advimage experiment stego-table") == 5  # 8.1-8.4 and the adaptive one
    assert (out / "roc.png").exists()
    assert "Table 8.3" in capsys.readouterr().out


def test_stego_table_refuses_bad_options(photos, tmp_path, capsys):
    for bad in (["--test-fraction", "1.5"], ["--dfs", "0"], ["--fld-dsub", "zero"]):
        with pytest.raises(SystemExit) as exc:
            main(["experiment", "stego-table", str(photos), "--out", str(tmp_path / "x"), *bad])
        assert exc.value.code != 0


def test_split_is_by_photo_and_stable():
    from advimage.experiments.stego_pairs import crop_boxes, split_of

    assert split_of("n01440764_tench", 0.35) == split_of("n01440764_tench", 0.35)
    splits = [split_of(f"photo{i}", 0.35) for i in range(400)]
    assert 0.25 < splits.count("test") / 400 < 0.45
    boxes = crop_boxes(500, 375, 4, seed=1)
    assert boxes[0] == (62, 0, 437, 375)
    for left, top, right, bottom in boxes:
        assert right - left == bottom - top and 187 <= right - left <= 375
        assert 0 <= left and right <= 500 and 0 <= top and bottom <= 375


def _small(photos: Path, *extra: str) -> list[str]:
    return ["experiment", "stego-table", str(photos), "--model", bench_tiny.TINY, "--out", "run", "--size", "32",
            "--train-crops", "3", "--test-crops", "1", "--test-fraction", "0.4", "--steps", "8", "--fgsm-steps", "8",
            "--quantizer-steps", "4", "--gina-steps", "2", "--tables", "8.3", "--quantizers", "smart", "gina",
            "--dfs", "1", "--features", "scrmq1", "--detectors", "ridge", "--srnet-epochs", "2",
            "--batch-size", "2", "--processes", "1", "--quiet", "--device", "cpu", *extra]


def test_stego_table_resumes_bit_for_bit(photos, tmp_path, monkeypatch, capsys):
    import warnings

    from advimage import engine

    warnings.simplefilter("ignore")  # the corrupt photo's warning
    first = tmp_path / "a"
    first.mkdir()
    monkeypatch.chdir(first)
    assert main(_small(photos)) == 0
    table = (first / "run" / "tables.md").read_bytes()
    assert b"Command: `advimage experiment stego-table" in table and b"--out run" in table
    files = sorted((first / "run" / "adv").rglob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    with pytest.raises(SystemExit) as e:  # a second call must say it continues
        main(_small(photos))
    assert e.value.code == 2 and re.search("--resume", capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:  # and with the same options
        main(_small(photos, "--resume") + ["--gina-steps", "3"])
    assert e.value.code == 2 and re.search("gina_steps", capsys.readouterr().err)
    assert main(_small(photos, "--resume")) == 0
    assert (first / "run" / "tables.md").read_bytes() == table
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing made again

    # an interrupted run, resumed, ends with the same table as the uninterrupted one
    second = tmp_path / "b"
    second.mkdir()
    monkeypatch.chdir(second)
    calls = {"n": 0}
    verify = engine.verify_row

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # in a later batch of the training pairs
            raise KeyboardInterrupt
        return verify(*args, **kwargs)
    monkeypatch.setattr(engine, "verify_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(_small(photos))
    monkeypatch.setattr(engine, "verify_row", verify)
    assert (second / "run" / "adv").is_dir() and not (second / "run" / "tables.md").exists()
    assert main(_small(photos, "--resume")) == 0
    assert (second / "run" / "tables.md").read_bytes() == table

    # the stages after the pairs may be extended: another SRNet, on the same pairs and features
    assert main(_small(photos, "--resume") + ["--srnet-epochs", "3"]) == 0
    longer = (second / "run" / "tables.md").read_text()
    assert "--srnet-epochs 3" in longer and "SRNet 3 epochs" in longer
    assert json.loads((second / "run" / "settings.json").read_text())["srnet_epochs"] == 3


def _store_rows(run: Path) -> list[dict]:
    from advimage.bench.store import ResultStore

    with ResultStore(run) as store:
        return store.rows()


def test_stego_table_resumes_from_the_store(photos, tmp_path, monkeypatch):
    """The rows are in the store: the exported CSVs can go (a resume makes nothing again and writes
    them back, byte for byte); a folder of the earlier version (rows in rows.csv, no store) resumes
    with its rows imported into the store once."""
    import warnings

    from advimage import engine

    warnings.simplefilter("ignore")  # the corrupt photo's warning
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(_small(photos)) == 0
    table = (run / "tables.md").read_bytes()
    exports = sorted([*(run / "adv").glob("*/rows.csv"), *(run / "sets").glob("*/pairs.csv")])
    assert exports
    content = {p: p.read_bytes() for p in exports}
    stored = _store_rows(run)
    variants = {r["attack"] for r in stored}
    assert variants == {p.parent.name for p in (run / "adv").glob("*/rows.csv")}
    for name in variants:  # one store row per crop x variant, the record whole in extra
        rows = list(csv.DictReader(open(run / "adv" / name / "rows.csv")))
        mine = [r for r in stored if r["attack"] == name]
        assert sorted(r["image"] for r in mine) == sorted(r["file"] for r in rows)
        by_file = {r["file"]: r for r in rows}
        for r in mine:
            assert {k: str(v) for k, v in r["extra"].items()} == by_file[r["image"]]
            assert r["success"] == bool(int(by_file[r["image"]]["success"]))
            assert r["distortion"] == pytest.approx(float(by_file[r["image"]]["l2"]))
    assert json.loads((run / "settings.json").read_text())["size"] == 32  # stego-table's own record, kept

    def no_work(*args, **kwargs):
        raise AssertionError("a crop was attacked again")
    monkeypatch.setattr(engine, "verify_row", no_work)

    for p in exports:
        p.unlink()
    assert main(_small(photos, "--resume")) == 0
    assert (run / "tables.md").read_bytes() == table
    assert {p: p.read_bytes() for p in exports} == content
    assert len(_store_rows(run)) == len(stored)

    # the earlier version's folder: rows.csv files, no store rows
    for p in run.glob("results.sqlite*"):
        p.unlink()
    assert main(_small(photos, "--resume")) == 0
    assert (run / "tables.md").read_bytes() == table
    assert {p: p.read_bytes() for p in exports} == content
    imported = _store_rows(run)
    assert sorted((r["attack"], r["image"]) for r in imported) == sorted((r["attack"], r["image"]) for r in stored)
    assert [r["extra"] for r in imported if r["attack"] == "train-fgsm-smart-df1"][0]["l2"] == \
        list(csv.DictReader(open(run / "adv" / "train-fgsm-smart-df1" / "rows.csv")))[0]["l2"]
