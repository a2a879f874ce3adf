"""Experiments' per-image rows in the one result store: exports read back equal what was committed,
a rerun's exports are its own rows, and rows that would hide each other are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from advimage.bench.store import ResultStore
from advimage.experiments.stored import ExperimentRun


def _columns(r):
    return dict(model="m", attack="a", quantizer=r["q"], image=r["image"], distortion=r.get("d"))


def test_records_come_back_exactly_in_commit_order(tmp_path):
    recs = [{"image": "b.png", "q": "x", "d": float("nan"), "z": None, "nested": {"none": 3, "jpeg90": True},
             "a": [1, 2.5]},
            {"q": "y", "image": "a.png", "d": 0.1 + 0.2, "big": 2 ** 40, "inf": float("inf")}]
    with ExperimentRun(tmp_path, {"experiment": "t", "seed": 3}, _columns) as run:
        run.commit(recs[:1])
        run.commit(recs[1:])
        back = run.records()
    assert json.dumps(back) == json.dumps(recs)  # key order, NaN, inf, ints, nesting
    assert math.isnan(back[0]["d"]) and back[1]["d"] == 0.1 + 0.2
    with ResultStore(tmp_path) as store:
        rows = store.rows()
    assert [(r["image"], r["quantizer"]) for r in rows] == [("b.png", "x"), ("a.png", "y")]
    assert rows[0]["distortion"] is None and rows[1]["distortion"] == 0.1 + 0.2  # NaN: no value in SQL
    assert json.loads((tmp_path / "settings.json").read_text())["settings"] == {"experiment": "t", "seed": 3}


def test_a_rerun_exports_its_own_rows_and_duplicates_are_refused(tmp_path):
    with ExperimentRun(tmp_path, {"k": 1}, _columns) as run:
        run.commit([{"image": "a", "q": "x", "v": 1}, {"image": "b", "q": "x", "v": 1}])
    with ExperimentRun(tmp_path, {"k": 2}, _columns) as run:  # other settings, one image
        run.commit([{"image": "a", "q": "x", "v": 2}])
        assert run.records() == [{"image": "a", "q": "x", "v": 2}]
        with pytest.raises(ValueError, match="same key"):
            run.commit([{"image": "a", "q": "x", "v": 3}])
    with ExperimentRun(tmp_path, {"k": 1}, _columns) as run:  # the same settings again: replaced
        run.commit([{"image": "a", "q": "x", "v": 4}])
        assert run.records() == [{"image": "a", "q": "x", "v": 4}]
    with ResultStore(tmp_path) as store:
        assert len(store) == 3 and len(store.runs()) == 3


def test_quant_table_exports_are_the_stored_rows(tmp_path, tiny_registered):
    from advimage.experiments import quantization_table

    g = np.random.default_rng(4)
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(g.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(folder / f"u{i}.png")
    out = tmp_path / "out"
    s = quantization_table.run([str(folder)], out, tiny_registered, steps=12, limit=None, progress=False)
    with ResultStore(out) as store:
        rows = store.rows()
    exported = json.loads((out / "rows.json").read_text())
    assert [r["extra"] for r in rows] == exported and len(exported) == 2 * 3  # images x (none, round, smart)
    assert [(r["image"], r["quantizer"], r["distortion"]) for r in rows] == \
        [(e["key"], e["quantizer"], e["distortion"]) for e in exported]
    assert {r["model"] for r in rows} == {tiny_registered} and s["images"] == 2


def test_a_rerun_reads_back_in_its_own_order(tmp_path):
    with ExperimentRun(tmp_path, {"k": 1}, _columns) as run:
        run.commit([{"image": i, "q": "x"} for i in "abc"])
    with ExperimentRun(tmp_path, {"k": 1}, _columns) as run:  # e.g. another batch size: another order
        run.commit([{"image": "c", "q": "x"}, {"image": "d", "q": "x"}])
        run.commit([{"image": "a", "q": "x"}])
        assert [r["image"] for r in run.records()] == ["c", "d", "a"]
    with ResultStore(tmp_path) as store:
        assert sorted(r["image"] for r in store.rows()) == ["a", "b", "c", "d"]
