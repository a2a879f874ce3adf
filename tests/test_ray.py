"""Ray scale-out on a real local cluster (2 CPUs): rows equal a local run's, a worker killed
mid-task is retried without loss or duplicate, the driver killed is finished by --resume, and
``advimage attack --ray`` writes the same files as a local run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from advimage.bench import run_benchmark  # noqa: E402
from advimage.bench.store import DB_NAME  # noqa: E402
from advimage.data import discover  # noqa: E402
from advimage.distributed import ModelRef, RayOptions, RayUnavailableError, executor  # noqa: E402
from advimage.engine import Settings, attack_files  # noqa: E402
from advimage.models import load_model  # noqa: E402
from bench_tiny import TINY, make_image_set  # noqa: E402

TESTS = str(Path(__file__).parent)
KW = dict(steps=12, queries=120, batch_size=2, gallery=1, progress=False)
ATTACKS = "bp,surfree"
OPTIONS = RayOptions(workers=2, threads=1, imports=("bench_tiny",))  # one CPU and one thread per task
DELAY = "0.01"  # seconds per forward in the workers: batches last long enough to be killed midway


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("ray_images"))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs whose workers can import the tiny test model (slowed down)."""
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "ADVIMAGE_TINY_DELAY")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, old["PYTHONPATH"]) if p)
    os.environ["ADVIMAGE_TINY_DELAY"] = DELAY  # read by bench_tiny when a worker imports it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local_reference(image_set, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray workers (OPTIONS: one thread each)
    try:
        return run_benchmark(image_set, TINY, attacks=ATTACKS, out=tmp_path_factory.mktemp("local") / "run", seed=3,
                             **KW)
    finally:
        torch.set_num_threads(n)


def comparable(rows):
    drop = {"run_id", "created", "seconds", "settings_hash"}
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows),
                  key=lambda r: (r["model"], r["attack"], r["quantizer"], r["image"]))


def _count(db: Path) -> tuple[int, int]:
    """(rows, distinct keys) committed so far."""
    if not db.exists():
        return 0, 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*), COUNT(DISTINCT model || attack || quantizer || image) "
                               "FROM results").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0, 0


def _busy_workers() -> list[int]:
    """Pids of this test cluster's Ray worker processes executing a work unit (Ray names them
    ``ray::execute_unit``; ours carry the cluster's ADVIMAGE_TINY_DELAY: other Ray runs on the
    machine are left alone)."""
    pids = []
    mark = f"ADVIMAGE_TINY_DELAY={DELAY}".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if ((d / "cmdline").read_bytes().startswith(b"ray::execute_unit")
                        and mark in (d / "environ").read_bytes().split(b"\0")):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_bench_on_ray_equals_local_and_survives_a_killed_worker(cluster, image_set, local_reference, tmp_path):
    out = tmp_path / "ray"
    db = out / "results.sqlite"
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            busy = _busy_workers()
            if busy and _count(db)[0] >= 2:  # some batches committed, others running
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_mid_run, daemon=True)
    killer.start()
    result = run_benchmark(image_set, TINY, attacks=ATTACKS, out=out, seed=3, ray=OPTIONS, **KW)
    killer.join(5)
    assert killed, "no worker was found executing a unit"
    assert not Path(f"/proc/{killed[0]}").exists() or b"zombie" in Path(f"/proc/{killed[0]}/status").read_bytes()
    total = len(local_reference.rows)
    assert _count(db) == (total, total)  # every (model, attack, image) row exactly once
    assert not any("worker lost" in (r.get("error") or "") for r in result.rows)  # the unit was retried
    assert comparable(result.rows) == comparable(local_reference.rows)  # same seed -> same rows
    ok = [(a, b) for a, b in zip(comparable(result.rows), comparable(local_reference.rows)) if not a["error"]]
    assert ok and all(abs(a["distortion"] - b["distortion"]) <= 1e-6 for a, b in ok)
    errors = sorted(r["image"] for r in result.rows if r["error"])  # corrupt and missing: error rows, as locally
    assert errors == ["broken.png", "broken.png", "missing.png", "missing.png"]
    assert sum(w["images"] for w in result.workers) == total
    assert len(result.workers) >= 2
    assert result.report.html.is_file()


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import bench_tiny
    from advimage.bench import run_benchmark
    from advimage.distributed import RayOptions
    run_benchmark({images!r}, bench_tiny.TINY, attacks="bp,surfree", out={out!r}, seed=3, steps=12, queries=120,
                  batch_size=2, gallery=1, progress=False,
                  ray=RayOptions(workers=2, threads=1, imports=("bench_tiny",)))
    print("FINISHED")
""")


def test_driver_killed_then_resume_finishes_the_run(cluster, image_set, local_reference, tmp_path):
    """The driver is SIGKILLed mid-run (its own local Ray cluster dies with it); --resume, here on
    the test's cluster, finishes the run without redoing or duplicating committed rows."""
    out = tmp_path / "killed"
    db = out / "results.sqlite"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(tests=TESTS, images=str(image_set), out=str(out))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    total = len(local_reference.rows)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and _count(db)[0] < 4:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    n_killed = _count(db)[0]
    assert 4 <= n_killed < total
    resumed = run_benchmark(image_set, TINY, attacks=ATTACKS, out=out, seed=3, resume=True, ray=OPTIONS, **KW)
    assert resumed.computed == total - n_killed
    assert _count(db) == (total, total)
    assert comparable(resumed.rows) == comparable(local_reference.rows)


def test_attack_on_ray_writes_the_local_files(cluster, image_set, tmp_path):
    items = discover([image_set], missing_ok=True)
    settings = Settings(attack="bp", steps=12, seed=1)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = attack_files(load_model(TINY, device="cpu"), items, tmp_path / "local", settings, batch_size=3,
                             progress=False, figures=False)
    finally:
        torch.set_num_threads(n)
    stats: list = []
    remote = attack_files(ModelRef(TINY), items, tmp_path / "ray", settings, batch_size=3, progress=False,
                          figures=False, ray=OPTIONS, stats=stats)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("seconds", "output")}  # noqa: E731
    assert [strip(r) for r in remote] == [strip(r) for r in local]
    written = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "local").iterdir()) and written
    for name in written:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert sum(w["images"] for w in stats[0].summary()) == len(items)


def test_workers_run_with_the_drivers_thread_count_by_default(cluster, image_set, tmp_path):
    """The thread count changes the convolutions' last bits: workers take the driver's, and the
    run records it (Ray reserves as many CPUs per task)."""
    n = torch.get_num_threads()
    options = RayOptions(workers=1, imports=("bench_tiny",))
    assert options.torch_threads == n and options.cpus == n
    with executor(options) as ex:
        ex.model_info(ModelRef(TINY))
        assert {w["threads"] for w in ex.stats.summary()} == {n}
    run_benchmark(image_set, TINY, attacks="bp", out=tmp_path / "run", ray=options, limit=2, **KW)
    settings = json.loads(sqlite3.connect(tmp_path / "run" / DB_NAME).execute(
        "SELECT settings FROM runs").fetchone()[0])
    assert settings["threads"] == n


def test_missing_ray_or_plugin_is_a_clear_error(monkeypatch):
    with pytest.raises(RayUnavailableError, match="cannot import 'no_such_plugin_module'"):
        with executor(RayOptions(imports=("no_such_plugin_module",))):
            pass
    from advimage import distributed
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(RayUnavailableError, match=r"advimage\[ray\]"):
        distributed.import_ray()
    with pytest.raises(ValueError, match="workers"):
        RayOptions(workers=0)


def test_cli_bench_and_attack_with_ray(cluster, image_set, tmp_path, capsys):
    from advimage.cli import main

    code = main(["bench", str(image_set), "--models", TINY, "--attacks", "bp", "--steps", "8", "--limit", "4",
                 "--batch-size", "1", "--out", str(tmp_path / "b"), "--ray", "--workers", "2",
                 "--ray-import", "bench_tiny"])
    captured = capsys.readouterr()
    assert code == 0
    assert "workers" in captured.err and "model loads" in captured.err  # the per-worker summary
    assert "4 rows (4 computed" in captured.out
    code = main(["attack", str(image_set / "img0.png"), "--model", TINY, "--steps", "8", "--out",
                 str(tmp_path / "a"), "--ray", "--ray-import", "bench_tiny", "--no-figures", "--quiet"])
    assert code == 0 and (tmp_path / "a" / "img0_adv.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["bench", "IMAGES", "--workers", "2"], "need --ray"),
    (["bench", "IMAGES", "--ray", "--workers", "0"], "workers must be >= 1"),
    (["attack", "IMAGES", "--ray-import", "x"], "need --ray"),
    (["attack", "IMAGES", "--ray", "--model", "no_such_model"], "no_such_model"),
])
def test_cli_refuses_bad_ray_options(image_set, argv, message, capsys):
    from advimage.cli import main

    argv = [str(image_set) if a == "IMAGES" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
