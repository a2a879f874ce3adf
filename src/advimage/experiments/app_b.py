"""Thesis Appendix B, Fig. 9.5-style evaluation: teacher vs robustified students on held-out images.

For the teacher (the model as given) and each student of ``advimage robustify`` (a run folder with
``student.safetensors``), the RoBIC bench (:func:`advimage.bench.runner.run_benchmark`, white box,
``bp`` best effort + smart quantization, model size, files verified) gives the clean accuracy η(0)
(labels of the image set: they are used here only, never in training) and d½ (fit of eq. 6.5 and
empirical crossing). The students' ε (read from their ``student.json``) makes the accuracy-robustness
curve: ``app_b.csv``, ``app_b.md`` and ``app_b.png`` (accuracy and d½ against ε; accuracy against d½).
The bench's run folder is ``OUT/bench`` (resumable: a finished model is not attacked again; a
student retrained in place keeps its old rows: use a new folder). ``--from-bench`` builds the same
outputs from bench run folders made separately (e.g. teacher and student in two processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from .registry import experiment

COLUMNS = ("model", "distance", "eps", "iters", "epochs", "train_images", "n_images", "accuracy",
           "d_half_fit", "d_half_empirical", "r2", "d_half_ratio", "accuracy_change")


def student_info(run_dir: str | Path) -> dict[str, Any]:
    """student.json of a robustify run folder (ValueError when absent)."""
    path = Path(run_dir) / "student.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no student.json (not an `advimage robustify` run folder?)")
    return json.loads(path.read_text())


def run(images: list[str], students: list[str], out: Path, *, model: str = "efficientnet_lite0",
        attack: str = "bp", steps: int = 20, skip: int = 0, limit: int = 40, batch_size: int = 8,
        device: str | None = None, seed: int = 0, progress: bool = True, resume: bool = True) -> list[dict]:
    """Bench teacher and students on ``images[skip:skip+limit]``; write app_b.csv/.md/.png; the rows."""
    from ..bench.runner import run_benchmark
    from ..data import discover

    infos = [student_info(s) for s in students]
    for s, info in zip(students, infos):
        if info["settings"]["model"] != model:
            raise ValueError(f"{s} is a student of {info['settings']['model']}, not of {model}")
    items = discover(images)[skip: skip + limit]
    if not items:
        raise ValueError(f"no images left after skip {skip}")
    specs = [model] + [f"{model}@{Path(s) / 'student.safetensors'}" for s in students]
    bench_dir = out / "bench"  # made by the bench, after its checks
    result = run_benchmark(items, specs, attacks=attack, steps=steps, seed=seed, batch_size=batch_size,
                           device=device, out=bench_dir, resume=resume, gallery=0, quantizer="smart",
                           progress=progress, title="App. B: teacher vs students")
    by_model = {s.model: s.to_dict() for s in result.summaries}
    rows = rows_from_summaries(by_model, model, [str(Path(s) / "student.safetensors") for s in students])
    write_outputs(rows, out, title=f"{model}, {attack} ({steps} steps), {rows[0]['n_images']} held-out images")
    return rows


def rows_from_summaries(by_model: dict[str, dict], model: str, student_files: list[str]) -> list[dict]:
    """Table rows (teacher first) from bench summaries keyed by model spec (``model`` and
    ``model@<student file>``); each student's settings come from the student.json beside its file."""
    if model not in by_model:
        raise ValueError(f"no bench result for the teacher {model!r}")
    teacher = by_model[model]
    rows = []
    for file in [None] + list(student_files):
        spec = model if file is None else f"{model}@{file}"
        if spec not in by_model:
            raise ValueError(f"no bench result for {spec!r}")
        s = by_model[spec]
        info = None if file is None else student_info(Path(file).parent)
        st = info["settings"] if info else {}
        rows.append({
            "model": "teacher" if info is None else str(file),
            "distance": st.get("distance", ""), "eps": st.get("eps", 0.0), "iters": st.get("iters", ""),
            "epochs": info["epoch"] if info else "", "train_images": int(st["data"].split(":")[0]) if info else "",
            "n_images": s["n_images"], "accuracy": s["accuracy"], "d_half_fit": s["d_half_fit"],
            "d_half_empirical": s["d_half_empirical"], "r2": s["r2"],
            "d_half_ratio": s["d_half_fit"] / teacher["d_half_fit"] if teacher["d_half_fit"] else math.nan,
            "accuracy_change": s["accuracy"] - teacher["accuracy"],
        })
    return rows


def from_bench(bench_dirs: list[str], out: Path, *, model: str = "efficientnet_lite0",
               attack: str = "bp") -> list[dict]:
    """The same table and figure from finished ``advimage bench`` run folders (their summary.json),
    e.g. a teacher and students benched by separate processes; students are the specs
    ``model@<file>``. Writes app_b.csv/.md/.png in ``out``; returns the rows."""
    by_model: dict[str, dict] = {}
    for d in bench_dirs:
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise ValueError(f"{d}: no summary.json (not a finished bench run folder?)")
        for s in json.loads(path.read_text())["summaries"]:
            if s["attack"] == attack:
                by_model[s["model"]] = s
    students = sorted(m.split("@", 1)[1] for m in by_model if m.startswith(model + "@"))
    rows = rows_from_summaries(by_model, model, students)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(rows, out, title=f"{model}, {attack}, {rows[0]['n_images']} held-out images")
    return rows


def markdown(rows: list[dict], title: str = "") -> str:
    head = ("| model | dist | ε | epochs | train imgs | images | accuracy | d½ fit | d½ emp. | d½ / teacher "
            "| Δ acc. |")
    lines = [f"**{title}**\n" if title else "", head, "|" + "---|" * 11]
    def f(v, spec):
        if v == "" or v is None:
            return ""
        return "nan" if isinstance(v, float) and math.isnan(v) else format(v, spec)
    for r in rows:
        lines.append(f"| {r['model']} | {r['distance']} | {f(r['eps'], 'g')} | {r['epochs']} | {r['train_images']} | "
                     f"{r['n_images']} | {f(r['accuracy'], '.3f')} | {f(r['d_half_fit'], '.3f')} | "
                     f"{f(r['d_half_empirical'], '.3f')} | {f(r['d_half_ratio'], '.2f')} | "
                     f"{f(100 * r['accuracy_change'], '+.1f')} pts |")
    return "\n".join(lines).lstrip("\n") + "\n"


def write_outputs(rows: list[dict], out: Path, title: str = "") -> None:
    """app_b.csv, app_b.md and app_b.png in ``out``."""
    with open(out / "app_b.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out / "app_b.md").write_text(markdown(rows, title))
    plot(rows, out / "app_b.png", title)


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Two panels: accuracy and d½ against the students' ε (teacher at ε = 0); accuracy against d½."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: float(r["eps"]))
    eps = [float(r["eps"]) for r in rows]
    acc = [100 * r["accuracy"] for r in rows]
    dh = [r["d_half_fit"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(eps, acc, "o-", color="tab:blue")
    a1.set_xlabel("training ε (teacher: 0)")
    a1.set_ylabel("clean accuracy (%)", color="tab:blue")
    a1b = a1.twinx()
    a1b.plot(eps, dh, "s--", color="tab:red")
    a1b.set_ylabel("d½ (BP, pixels)", color="tab:red")
    for r, x, y in zip(rows, dh, acc):
        a2.plot(x, y, "o", color="black" if r["model"] == "teacher" else "tab:green")
        a2.annotate("teacher" if r["model"] == "teacher" else f"ε={float(r['eps']):g} {r['distance']}", (x, y),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    a2.set_xlabel("d½ (BP, pixels)")
    a2.set_ylabel("clean accuracy (%)")
    a2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@experiment("app-b", "App. B: teacher vs robustified students (clean accuracy, white-box d½, curve over ε)")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``app-b`` to ``advimage experiment``'s subparsers."""
    from ..cli_types import positive_int

    p = experiment_subparsers.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="*", help="held-out labelled images (folder with labels.csv, ...)")
    p.add_argument("--students", default="",
                   help="comma-separated run folders of `advimage robustify` (none: the teacher only)")
    p.add_argument("--model", default="efficientnet_lite0", help="the teacher (the students' model)")
    p.add_argument("--attack", default="bp", help="white-box attack")
    p.add_argument("--steps", type=positive_int, default=20, help="gradients per image, attack + quantizer")
    p.add_argument("--skip", type=int, default=0, help="skip the first N images (e.g. the training split)")
    p.add_argument("--limit", type=positive_int, default=40, help="held-out images (after --skip)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per attack call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--out", default="runs/app-b", help="output folder (the bench's run folder is OUT/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--from-bench", default=None, metavar="DIRS",
                   help="attack nothing: build the table from finished `advimage bench` run folders (comma-separated; "
                        "teacher --model and students MODEL@FILE) instead")
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    from ..bench.runner import ConfigError
    from ..cli_support import fail
    from ..data import DataError
    from ..models import UnknownModelError, WeightsError

    if args.skip < 0:
        fail("--skip must be >= 0")
    if not args.images and not args.from_bench:
        fail("app-b needs held-out images (or --from-bench DIRS)")
    students = [s for s in args.students.split(",") if s.strip()]
    try:
        if args.from_bench:
            rows = from_bench([d for d in args.from_bench.split(",") if d.strip()], Path(args.out),
                              model=args.model, attack=args.attack)
            print(markdown(rows), end="")
            print(f"written: {args.out}/app_b.csv, app_b.md, app_b.png")
            return 0
        rows = run(args.images, students, Path(args.out), model=args.model, attack=args.attack, steps=args.steps,
                   skip=args.skip, limit=args.limit, batch_size=args.batch_size, device=args.device,
                   seed=args.seed, progress=not args.quiet)
    except (ValueError, ConfigError, DataError, UnknownModelError, WeightsError) as exc:
        fail(str(exc))
    print(markdown(rows), end="")
    print(f"written: {args.out}/app_b.csv, app_b.md, app_b.png")
    return 0
