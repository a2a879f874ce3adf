"""Result store: uniqueness, resume, atomic batches, SIGKILL robustness, exports."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from advimage.bench import store as store_module
from advimage.bench.store import COLUMNS, ResultStore, settings_hash

SETTINGS = {"attack": {"steps": 20, "targeted": False}, "seed": 0}


def make_rows(images, model="m", attack="bp", quantizer="none"):
    return [dict(model=model, attack=attack, quantizer=quantizer, image=f"img{i:03d}", label=i % 7,
                 prediction=i % 7 if i % 5 else (i + 1) % 7, adv_label=(i + 3) % 7,
                 distortion=0.01 * i, success=i % 4 != 0, gradients=20, queries=0, seconds=0.5)
            for i in images]


def comparable(rows):
    """Rows without the fields that legitimately differ between runs."""
    return sorted(({k: v for k, v in r.items() if k not in ("run_id", "created")} for r in rows),
                  key=lambda r: (r["model"], r["attack"], r["quantizer"], r["image"]))


def test_settings_hash_is_canonical():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
    assert len(settings_hash({})) == 16


def test_metadata_and_settings_json(tmp_path):
    with ResultStore(tmp_path) as st:
        rid = st.start_run(SETTINGS, seed=123)
        runs = st.runs()
    assert [r["run_id"] for r in runs] == [rid]
    assert runs[0]["seed"] == 123 and runs[0]["settings"] == SETTINGS
    meta = json.loads((tmp_path / "settings.json").read_text())
    assert meta["run_id"] == rid and meta["seed"] == 123 and meta["settings"] == SETTINGS
    assert set(meta["versions"]) >= {"python", "torch", "timm", "advimage", "numpy"}
    assert meta["versions"]["python"].count(".") == 2
    assert (tmp_path / "results.sqlite").exists()
    with ResultStore(tmp_path) as st:  # WAL mode persists in the file
        assert st._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_start_run_can_leave_settings_json_alone(tmp_path):
    """A caller keeping its own record in settings.json (stego-table) still records the run."""
    (tmp_path / "settings.json").write_text('{"own": 1}')
    with ResultStore(tmp_path) as st:
        rid = st.start_run(SETTINGS, seed=5, settings_file=False)
        st.add_batch(make_rows(range(2)), settings=SETTINGS)
        assert [r["run_id"] for r in st.runs()] == [rid] and {r["run_id"] for r in st.rows()} == {rid}
    assert json.loads((tmp_path / "settings.json").read_text()) == {"own": 1}


def test_add_done_rows_and_no_duplicates(tmp_path):
    with ResultStore(tmp_path) as st:
        with pytest.raises(ValueError, match="start_run"):
            st.add_batch(make_rows([0]), settings=SETTINGS)
        st.start_run(SETTINGS)
        assert st.add_batch(make_rows(range(10)), settings=SETTINGS) == 10
        # re-running the finished configuration writes nothing and keeps the first rows
        changed = make_rows(range(10))
        for r in changed:
            r["distortion"] = 99.0
        assert st.add_batch(changed, settings=SETTINGS) == 0
        assert len(st) == 10
        assert all(r["distortion"] != 99.0 for r in st.rows())
        # another settings hash, quantizer or attack is another configuration
        assert st.add_batch(make_rows(range(3)), settings={**SETTINGS, "seed": 1}) == 3
        assert st.add_batch(make_rows(range(3), quantizer="round"), settings=SETTINGS) == 3
        assert st.done("m", "bp", "none", SETTINGS) == {f"img{i:03d}" for i in range(10)}
        assert st.done("m", "bp", "round", SETTINGS) == {f"img{i:03d}" for i in range(3)}
        assert st.done("m", "pgd", "none", SETTINGS) == set()
        rows = st.rows(model="m", attack="bp", quantizer="none", settings=SETTINGS)
        assert [r["image"] for r in rows] == [f"img{i:03d}" for i in range(10)]
        assert rows[3]["success"] is True and rows[4]["success"] is False
        assert rows[3] | {"run_id": None, "created": None, "settings_hash": None} == \
            make_rows([3])[0] | {"run_id": None, "created": None, "settings_hash": None,
                                 "error": None, "extra": None}
        # replace=True overwrites
        assert st.add_batch(changed[:2], settings=SETTINGS, replace=True) == 2
        assert [r["distortion"] for r in st.rows(settings=SETTINGS)[:3]] == [99.0, 99.0, 0.02]
        assert len(st) == 16


def test_error_rows_are_retried(tmp_path):
    with ResultStore(tmp_path) as st:
        st.start_run(SETTINGS)
        bad = [dict(model="m", attack="bp", quantizer="none", image="x", error="RuntimeError: OOM",
                    extra={"trace": "..."})]
        assert st.add_batch(bad, settings=SETTINGS) == 1
        assert st.done("m", "bp", "none", SETTINGS) == {"x"}
        assert st.done("m", "bp", "none", SETTINGS, retry_errors=True) == set()
        assert st.rows()[0]["extra"] == {"trace": "..."}
        good = [dict(model="m", attack="bp", quantizer="none", image="x", distortion=0.3, success=True)]
        assert st.add_batch(good, settings=SETTINGS) == 1  # an error row is replaced by a result
        (r,) = st.rows()
        assert r["error"] is None and r["distortion"] == 0.3
        assert st.add_batch(bad, settings=SETTINGS) == 0  # but a result is never replaced by an error


def test_bad_rows_rejected_and_batch_is_atomic(tmp_path):
    with ResultStore(tmp_path) as st:
        st.start_run(SETTINGS)
        with pytest.raises(ValueError, match="unknown column"):
            st.add_batch([dict(make_rows([0])[0], colour="red")], settings=SETTINGS)
        with pytest.raises(ValueError, match="quantizer"):
            st.add_batch([dict(make_rows([0])[0], quantizer=None)], settings=SETTINGS)
        rows = make_rows(range(5))
        rows[3]["label"] = object()  # not an int: refused before anything is written
        with pytest.raises(TypeError):
            st.add_batch(rows, settings=SETTINGS)
        assert len(st) == 0
        # a failure inside the transaction, after rows were inserted, rolls the whole batch back
        st._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON results WHEN NEW.image = 'img003' "
                         "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        with pytest.raises(sqlite3.DatabaseError, match="disk on fire"):
            st.add_batch(make_rows(range(5)), settings=SETTINGS)
        assert len(st) == 0 and st.done("m", "bp", "none", SETTINGS) == set()
        assert st.add_batch(make_rows(range(3)), settings=SETTINGS) == 3  # the store is still usable
        assert len(st) == 3


def test_exports(tmp_path, monkeypatch):
    with ResultStore(tmp_path) as st:
        st.start_run(SETTINGS)
        st.add_batch(make_rows(range(4)), settings=SETTINGS)
        st.add_batch([dict(model="m", attack="bp", quantizer="none", image="e", error="boom", extra={"k": 1})],
                     settings=SETTINGS)
        path = st.export_csv(tmp_path / "rows.csv")
        with open(path, newline="") as f:
            got = list(csv.DictReader(f))
        assert list(got[0]) == list(COLUMNS)
        assert [g["image"] for g in got] == ["img000", "img001", "img002", "img003", "e"]
        assert got[1]["success"] == "1" and got[0]["success"] == "0" and got[4]["error"] == "boom"
        assert float(got[2]["distortion"]) == 0.02 and json.loads(got[4]["extra"]) == {"k": 1}
        assert len(list(csv.DictReader(open(st.export_csv(tmp_path / "f.csv", with_errors=False))))) == 4

        monkeypatch.setitem(sys.modules, "pyarrow", None)  # simulate a missing pyarrow
        with pytest.raises(ImportError, match="pip install pyarrow"):
            st.export_parquet(tmp_path / "rows.parquet")
        monkeypatch.undo()
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(st.export_parquet(tmp_path / "rows.parquet"))
        assert table.column_names == list(COLUMNS)
        assert table.column("image").to_pylist() == ["img000", "img001", "img002", "img003", "e"]
        assert table.column("success").to_pylist()[:2] == [False, True]


WORKER = textwrap.dedent("""
    import importlib.util, sys, time
    # the store is stdlib-only: load its file directly, skipping the package's torch import
    spec = importlib.util.spec_from_file_location("store", sys.argv[5])
    store = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(store)
    ResultStore = store.ResultStore
    run_dir, n, batch, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    settings = {"attack": {"steps": 20, "targeted": False}, "seed": 0}

    def make_rows(images):  # deterministic stand-in for attack results
        return [dict(model="m", attack="bp", quantizer="none", image=f"img{i:03d}", label=i % 7,
                     prediction=i % 7, adv_label=(i + 3) % 7, distortion=0.01 * i, success=i % 4 != 0,
                     gradients=20, queries=0, seconds=0.5) for i in images]
    with ResultStore(run_dir) as st:
        st.start_run(settings, seed=0)
        done = st.done("m", "bp", "none", settings)
        todo = [i for i in range(n) if f"img{i:03d}" not in done]
        print("resume", len(done), flush=True)
        for k in range(0, len(todo), batch):
            part = todo[k:k + batch]
            print("working", part[0], flush=True)
            time.sleep(delay)  # the attack of this batch: a SIGKILL here loses only this batch
            st.add_batch(make_rows(part), settings=settings)
            print("committed", part[-1], flush=True)
    print("finished", flush=True)
""")


def run_worker(run_dir: Path, n: int, batch: int, delay: float, kill_after: int | None = None) -> list[str]:
    """Run the worker; with kill_after, SIGKILL it while it works on batch number kill_after."""
    script = run_dir.parent / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(n), str(batch), str(delay),
                             store_module.__file__],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_after is not None and sum(ln.startswith("working") for ln in lines) == kill_after:
                time.sleep(delay / 3)  # well inside the batch's work
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if kill_after is None:
        assert proc.returncode == 0, proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL
    return lines


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    n, batch, delay = 23, 5, 0.3
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_worker(clean, n, batch, delay=0.0)

    lines = run_worker(killed, n, batch, delay, kill_after=3)
    assert lines[-1] == "working 10" and "finished" not in lines
    with ResultStore(killed) as st:  # two batches committed, the third lost as a whole
        assert sorted(st.done("m", "bp", "none", SETTINGS)) == [f"img{i:03d}" for i in range(10)]

    lines = run_worker(killed, n, batch, delay=0.0)
    assert lines[0] == "resume 10" and lines[-1] == "finished"
    lines = run_worker(killed, n, batch, delay=0.0)  # a finished configuration: nothing to do
    assert lines == ["resume 23", "finished"]

    with ResultStore(clean) as a, ResultStore(killed) as b:
        ra, rb = a.rows(), b.rows()
        assert len(rb) == n and len({r["image"] for r in rb}) == n
        assert comparable(ra) == comparable(rb)
        assert len(b.runs()) == 3  # every (re)start is recorded
