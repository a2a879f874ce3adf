"""Benchmark runner: complete runs with error rows, SIGKILL + resume, refusal of bad names, seeds."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import advimage.models as models
from advimage.bench import cli as bench_cli
from advimage.bench import run_benchmark
from advimage.bench.runner import ConfigError, RunExistsError, batch_seed, parse_attack
from advimage.codec import decode, encode_png
from advimage.images import read_image
from bench_tiny import BUILDS, TINY, make_image_set

ATTACKS = "bp,surfree"
KW = dict(steps=12, queries=120, batch_size=2, gallery=1, progress=False)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("images"))


def comparable(rows):
    drop = {"run_id", "created", "seconds", "settings_hash"}
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows),
                  key=lambda r: (r["model"], r["attack"], r["quantizer"], r["image"]))


def table_without_time(md: str) -> list[list[str]]:
    """Markdown table cells without the s/image column (timings differ between runs)."""
    return [[c.strip() for c in line.strip("|").split("|")][:-1] for line in md.splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def reference(image_set, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_benchmark(image_set, TINY, attacks=ATTACKS, out=tmp_path_factory.mktemp("ref") / "run",
                             seed=3, **KW)
    finally:
        torch.set_num_threads(n)


def test_complete_run(reference, image_set):
    res = reference
    rows = res.rows
    assert len(rows) == 2 * 10  # 10 listed images x (bp, surfree)
    assert len({(r["attack"], r["image"]) for r in rows}) == len(rows)
    errors = [r for r in rows if r["error"]]
    assert sorted({r["image"] for r in errors}) == ["broken.png", "missing.png"] and len(errors) == 4
    assert any("no such file" in r["error"] for r in errors)
    ok = [r for r in rows if not r["error"]]
    mis = [r for r in ok if r["prediction"] != r["label"]]
    assert sorted({r["image"] for r in mis}) == ["img2.png", "img5.png"]
    assert all(r["success"] and r["distortion"] == 0 and r["gradients"] == 0 for r in mis)
    bp = [r for r in ok if r["attack"] == "bp" and r not in mis]
    sf = [r for r in ok if r["attack"] == "surfree" and r not in mis]
    assert any(r["success"] for r in bp) and any(r["success"] for r in sf)
    for r in bp:  # white box: attack + quantization gradients, within budget + 1
        assert 1 <= r["gradients"] <= KW["steps"] + 1 and r["queries"] == 0
        assert r["success"] == (r["adv_label"] != r["label"])
        if r["success"]:
            assert r["distortion"] > 0
    for r in sf:
        assert 0 < r["queries"] <= KW["queries"] and r["gradients"] == 0
    # the report: Table 6.2 with the tiny model, html, csv exports
    assert res.report.html.is_file() and res.report.html.stat().st_size > 1000
    html = res.report.html.read_text()
    assert TINY in html and "data:image/png;base64" in html
    cells = table_without_time(res.markdown)
    assert cells[2][0] == TINY
    assert float(cells[2][1]) == pytest.approx(res.params_millions[TINY], abs=0.005)
    params = sum(p.numel() for p in models.load_model(TINY, device="cpu").parameters())
    assert res.params_millions[TINY] == pytest.approx(params / 1e6)
    assert float(cells[2][2]) == pytest.approx(100 * 6 / 8, abs=0.05)  # eta(0): 6 of 8 readable images
    with open(res.results_csv, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (res.run_dir / "settings.json").is_file() and (res.run_dir / "summary.json").is_file()
    # summary.json: the old keys, plus Table 6.2 (empirical d½ first) and the fit conventions
    js = json.loads((res.run_dir / "summary.json").read_text())
    assert {"summaries", "params_millions", "jobs", "table"} <= set(js)
    (trow,) = js["table"]
    assert trow["model"] == TINY
    assert trow["d_half_empirical_white"] == pytest.approx(res.table[0].d_half_empirical_white, nan_ok=True)
    sj = {s["attack"]: s for s in js["summaries"]}["bp"]
    assert {"d_half_fit", "r2", "d_half_empirical", "lam"} <= set(sj)
    assert list(sj["fits"]) == ["pinned/breakpoints", "pinned/uniform", "fitted/breakpoints", "fitted/uniform"]
    if sj["fits"]["pinned/breakpoints"]:
        assert sj["fits"]["pinned/breakpoints"]["r2"] == pytest.approx(sj["r2"], nan_ok=True)
    # the white-box summary also fits the attack's floats (reference only); black box has none
    by_attack = {s.attack: s for s in res.summaries}
    assert by_attack["bp"].d_half_unquantized > 0 and math.isnan(by_attack["surfree"].d_half_unquantized)
    # measurements are those of the PNG: the gallery example's adversarial file gives the same numbers
    ex = [r for r in ok if r["extra"].get("example")]
    assert ex
    r = ex[0]
    folder = res.run_dir / "examples" / TINY / r["attack"]
    x0 = read_image(folder / f"{r['extra']['example']}_orig.png").float()
    xa = read_image(folder / f"{r['extra']['example']}_adv.png").float()
    d = float(((xa - x0).pow(2).mean()).sqrt())
    assert d == pytest.approx(r["distortion"], rel=1e-5)
    model = models.load_model(TINY, device="cpu")
    assert int(model.predict(xa[None])) == r["adv_label"] != r["label"]


def test_rerun_reuses_rows_and_refuses_without_resume(reference, image_set):
    with pytest.raises(RunExistsError, match="resume"):
        run_benchmark(image_set, TINY, attacks=ATTACKS, out=reference.run_dir, seed=3, **KW)
    again = run_benchmark(image_set, TINY, attacks=ATTACKS, out=reference.run_dir, seed=3, resume=True, **KW)
    # only the two unreadable images are retried; every measured row is reused
    assert again.computed == 4
    assert comparable(again.rows) == comparable(reference.rows)
    con = sqlite3.connect(reference.run_dir / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == len(reference.rows)
    con.close()


def test_same_seed_same_rows(reference, image_set, tmp_path, one_thread):
    again = run_benchmark(image_set, TINY, attacks="surfree", out=tmp_path / "a", seed=3, **KW)
    assert comparable(again.rows) == comparable([r for r in reference.rows if r["attack"] == "surfree"])
    other = run_benchmark(image_set, TINY, attacks="surfree", out=tmp_path / "b", seed=4, **KW)
    dist = lambda rows: [r["distortion"] for r in rows if not r["error"]]  # noqa: E731
    assert dist(other.rows) != dist(again.rows)


SUBPROCESS = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    import test_bench_runner as t
    import bench_tiny
    bench_tiny.register_tiny(delay=0.004)
    from advimage.bench import run_benchmark
    run_benchmark({images!r}, t.TINY, attacks=t.ATTACKS, out={out!r}, seed=3, **t.KW)
    print("FINISHED")
""")


def _committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_resume_equals_uninterrupted(reference, image_set, tmp_path, one_thread):
    out = tmp_path / "killed"
    code = SUBPROCESS.format(tests=str(Path(__file__).parent), images=str(image_set), out=str(out))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    total = len(reference.rows)
    db = out / "results.sqlite"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and _committed(db) < 8:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_killed = _committed(db)
    assert 8 <= n_killed < total
    # resume with the same model (without the delay): continues, never duplicates
    resumed = run_benchmark(image_set, TINY, attacks=ATTACKS, out=out, seed=3, resume=True, **KW)
    assert resumed.computed < total
    assert comparable(resumed.rows) == comparable(reference.rows)
    assert _committed(db) == total
    assert table_without_time(resumed.markdown) == table_without_time(reference.markdown)
    assert resumed.report.html.is_file()


def _cli(argv):
    parser = argparse.ArgumentParser(prog="advimage")
    sub = parser.add_subparsers(dest="command", required=True)
    bench_cli.add_parser(sub)
    return bench_cli.run(parser.parse_args(argv))


def test_unknown_names_refused_before_any_work(image_set, tmp_path, capsys):
    before = BUILDS["n"]
    with pytest.raises(models.UnknownModelError, match="registered models: .*efficientnet_lite0"):
        run_benchmark(image_set, f"{TINY},nope", out=tmp_path / "a", progress=False)
    from advimage.attacks import UnknownAttackError
    with pytest.raises(UnknownAttackError, match="valid attacks: .*bp"):
        run_benchmark(image_set, TINY, attacks="bp,nope", out=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError):
        run_benchmark(image_set, TINY, attacks="bp:x", out=tmp_path / "c", progress=False)
    assert BUILDS["n"] == before  # no model was built
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    for argv, valid in ((["bench", str(image_set), "--models", "nope", "--out", str(tmp_path / "d")],
                         "efficientnet_lite0"),
                        (["bench", str(image_set), "--models", TINY, "--compare-attacks", "bp,nope",
                          "--out", str(tmp_path / "d")], "surfree")):
        with pytest.raises(SystemExit) as e:
            _cli(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "nope" in err and valid in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flags, attacks", [([], "bp,cgba:2000"), (["--thesis-protocol"], "bp,surfree:5000"),
                                            (["--attacks", "bp,hsj"], "bp,hsj")])
def test_cli_default_attacks_and_the_thesis_protocol(flags, attacks, tmp_path, monkeypatch):
    """The bench's black box is CGBA at 2000 queries unless the thesis's SurFree at 5000 is asked for."""
    from advimage.bench import runner

    seen = {}

    def fake(images, models, **kw):
        seen.update(kw)
        raise runner.ConfigError("stop here")
    monkeypatch.setattr(runner, "run_benchmark", fake)
    with pytest.raises(SystemExit):
        _cli(["bench", str(tmp_path), "--out", str(tmp_path / "o"), *flags])
    assert seen["attacks"] == attacks
    with pytest.raises(SystemExit) as e:  # one way to name the attacks
        _cli(["bench", str(tmp_path), "--thesis-protocol", "--attacks", "bp"])
    assert e.value.code == 2


def test_cli_compare_attacks(image_set, tmp_path, capsys, one_thread):
    out = tmp_path / "cmp"
    code = _cli(["bench", str(image_set), "--models", TINY, "--compare-attacks", "fgsm:8,bp", "--steps", "10",
                 "--limit", "5", "--batch-size", "4", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"| {TINY} |" in printed and "report.html" in printed
    html = (out / "report" / "report.html").read_text()
    assert "All attacks on" in html and (out / "report" / "compare" / f"{TINY}.png").is_file()
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["attack"] for r in rows} == {"fgsm:8", "bp"} and len(rows) == 10
    fg = [r for r in rows if r["attack"] == "fgsm:8" and not r["error"] and r["prediction"] == r["label"]]
    assert fg and all(int(r["gradients"]) <= 8 + 1 for r in fg)


def test_helpers():
    x = torch.randint(0, 256, (3, 3, 5, 7), dtype=torch.uint8)
    data = [encode_png(xi) for xi in x]
    assert torch.equal(torch.stack([decode(d) for d in data]), x) and all(d.startswith(b"\x89PNG") for d in data)
    assert parse_attack("cw:1000") == ("cw", 1000) and parse_attack("bp") == ("bp", None)
    with pytest.raises(ConfigError):
        parse_attack("cw:0")
    assert batch_seed(0, "m", "bp", 1) == batch_seed(0, "m", "bp", 1) != batch_seed(0, "m", "bp", 2)


def test_bench_runs_the_jpeg_quantizer_on_a_defended_model(image_set, tmp_path):
    """Any quantizer, any classifier: BP + JPEG quantization against the model behind JPEG 90."""
    res = run_benchmark(image_set, [TINY, f"{TINY}+jpeg:90"], attacks="bp", quantizer="jpeg", quality=90,
                        limit=4, out=tmp_path / "run", steps=12, batch_size=2, gallery=0, progress=False)
    rows = [r for r in res.rows if not r.get("error")]
    assert {r["model"] for r in rows} == {TINY, f"{TINY}+jpeg:90"} and {r["quantizer"] for r in rows} == {"jpeg"}
    for r in rows:
        if r["model"] == TINY and r["prediction"] == r["label"]:
            assert r["extra"]["compression_distortion"] > 0 and r["gradients"] <= 12


def test_bench_at_native_size(image_set, tmp_path):
    res = run_benchmark(image_set, TINY, attacks="bp", size="native", limit=3, out=tmp_path / "run", steps=10,
                        batch_size=3, gallery=1, progress=False)
    rows = [r for r in res.rows if not r.get("error")]
    attacked = [r for r in rows if not r["extra"].get("misclassified")]
    assert attacked and all("distortion_model" in r["extra"] for r in attacked)
    assert res.report.html.is_file()
