"""Hard-label attacks side by side: SurFree, HopSkipJump, CGBA, CGBA-H and TtBA on the same images and model.

For every attack and every budget K (label queries per image, default 500, 1000, 2000, 5000) one
independent run with budget K, as the RoBIC benchmark runs it (an attack told its budget may
plan for it: SurFree keeps its last queries for a line search, HSJ for its rounding checks).
Per run, on the integer images the attacks return (re-checked by the model, outside the timings):

- the median distortion (eq. 6.2, pixel units; a failed attack counts as infinite, a
  misclassified original as 0) and the empirical d½, the distortion where the accuracy curve
  η(d) crosses η(0)/2 (:func:`advimage.bench.metrics.empirical_half_distortion`);
- the time per query over plain forwards: the attack's wall time over the time of the very same
  sequence of forward passes (batch sizes recorded by a hook) replayed under ``torch.no_grad``
  (only for the largest budget unless ``--time-all``).

Usage::

    python benchmarks/bench_blackbox.py IMAGES [-n 16] [--model efficientnet_lite0] \\
        [--attacks surfree,hsj,cgba,cgba_h,ttba] [--budgets 500,1000,2000,5000] [--batch-size 16] \\
        [--device cuda] [--threads N] [--seed 0] [--time-all | --no-time] \\
        [--out benchmarks/out/blackbox.json] [--plot benchmarks/out/blackbox.png]

Writes JSON and a plot of the median distortion against the budget, and prints a table.
Every finished (attack, budget) run is appended to ``--out`` with ``.jsonl`` as it ends: a rerun
on the same images, model, device, seed and batch size skips the runs already there, and the
JSON, plot and table cover every stored run of that setting (so ``--attacks cgba --budgets
1000,5000`` then ``--attacks surfree --budgets 2000,5000`` build one comparison; an interrupted
run loses only the run in progress). Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _finite(v: float) -> float | None:
    """JSON-safe float: None for inf / nan."""
    return float(v) if math.isfinite(v) else None


def load_images(paths: list[str], n: int, model) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first ``n`` images as float pixels (n, 3, H, W) at the model's input size, their labels
    (from the image set, else the model's prediction) and names."""
    from advimage.data import discover
    from advimage.images import load_for_model

    items = discover(paths)[:n]
    if not items:
        raise SystemExit(f"no images in {paths}")
    x = torch.stack([load_for_model(it.path, model.config) for it in items]).to(model.device).float()
    pred = model.predict(x).to(model.device)
    y = torch.tensor([it.label if it.label is not None else int(p) for it, p in zip(items, pred)],
                     dtype=torch.long, device=model.device)
    return x, y, [Path(it.path).name for it in items]


def run_attack(name: str, model, x: torch.Tensor, y: torch.Tensor, budget: int, seed: int,
               batch_size: int, replay: bool) -> dict:
    """One attack at one budget on all images (chunks of ``batch_size``); timings and results."""
    from advimage.attacks import get

    dev = x.device
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, inp: sizes.append(int(inp[0].shape[0])))
    parts = []
    _sync(dev)
    t0 = time.perf_counter()
    try:
        for s in range(0, x.shape[0], batch_size):
            parts.append(get(name)(model, x[s:s + batch_size], y[s:s + batch_size], steps=budget, seed=seed))
        _sync(dev)
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    x_adv = torch.cat([p.x_adv for p in parts])
    success = torch.cat([p.success for p in parts])
    dist = torch.cat([p.distortion for p in parts])
    queries = torch.cat([p.queries for p in parts])
    with torch.no_grad():  # the returned images, checked again (integer pixels, label flipped)
        fooled = model(x_adv).argmax(1) != y
    integer = bool(torch.equal(x_adv, x_adv.round()))
    out = {"seconds": seconds, "forward_calls": len(sizes), "images_forwarded": sum(sizes),
           "distortion": dist.tolist(), "success": success.tolist(), "queries": queries.tolist(),
           "verified": bool(torch.equal(fooled, success)), "integer": integer,
           "max_queries": int(queries.max()) if queries.numel() else 0}
    if replay:
        with torch.no_grad():
            _sync(dev)
            t0 = time.perf_counter()
            for m in sizes:
                model(x[:m] if m <= x.shape[0] else x.repeat(math.ceil(m / x.shape[0]), 1, 1, 1)[:m])
            _sync(dev)
        out["forwards_seconds"] = time.perf_counter() - t0
        out["ratio"] = seconds / out["forwards_seconds"] if out["forwards_seconds"] > 0 else float("nan")
    return out


def summarize(run: dict, misclassified: list[bool]) -> dict:
    """Median distortion and empirical d½ of one run (failures at inf)."""
    from advimage.bench.metrics import empirical_half_distortion, operating_curve

    curve = operating_curve(run["distortion"], run["success"], misclassified)
    return {"median": float(np.median(curve.effective)), "d_half_empirical": empirical_half_distortion(curve),
            "success_rate": float(np.mean(run["success"])), "accuracy": curve.accuracy}


def plot(results: dict, budgets: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for name, runs in results.items():
        ks = [k for k in budgets if str(k) in runs]
        med = [np.nan if runs[str(k)]["median"] is None else runs[str(k)]["median"] for k in ks]
        lo = [np.percentile(_effective(runs[str(k)]), 25) for k in ks]
        hi = [np.percentile(_effective(runs[str(k)]), 75) for k in ks]
        half = [np.nan if runs[str(k)]["d_half_empirical"] is None else runs[str(k)]["d_half_empirical"]
                for k in ks]
        line, = ax.plot(ks, med, marker="o", label=f"{name} median")
        ax.plot(ks, half, marker="x", linestyle="--", color=line.get_color(), label=f"{name} d½")
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(budgets, [str(k) for k in budgets])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("label queries per image")
    ax.set_ylabel("distortion, eq. (6.2): median (IQR), empirical d½")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: single-budget points stay visible
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(v: float | None, f: str = ".3g") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, f)


def stored_runs(log: Path, setting: dict) -> dict[str, dict[str, dict]]:
    """Runs already in the JSONL log for this setting: attack -> budget (str) -> run."""
    runs: dict[str, dict[str, dict]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row["setting"] == setting:
                    runs.setdefault(row["attack"], {})[str(row["budget"])] = row["run"]
    return runs


def _effective(run: dict) -> np.ndarray:
    d = np.asarray([np.inf if v is None else v for v in run["distortion"]], dtype=float)
    return np.where(np.asarray(run["success"]), d, np.inf)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="image files or folders (e.g. ../shared/data/imagenet-sample)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("-n", "--images-count", dest="n", type=int, default=16, help="first N images")
    p.add_argument("--attacks", default="surfree,hsj,cgba,cgba_h,ttba")
    p.add_argument("--budgets", default="500,1000,2000,5000", help="label queries per image, comma-separated")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-all", action="store_true",
                   help="replay the forwards of every run, not only the largest budget")
    p.add_argument("--no-time", action="store_true",
                   help="replay no forwards (a replay costs as many forwards as the run it times)")
    p.add_argument("--out", default="benchmarks/out/blackbox.json")
    p.add_argument("--plot", default=None, help="default: --out with .png")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if not budgets or min(budgets) < 1 or not attacks:
        raise SystemExit("need budgets >= 1 and at least one attack")
    from advimage.attacks import spec
    from advimage.models import load_model

    for a in attacks:
        if not spec(a).black_box:
            raise SystemExit(f"{a} is not a black-box attack")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device=device)
    x, y, names = load_images(args.images, args.n, model)
    with torch.no_grad():
        model(x[:1])  # warm-up (lazy init, cuDNN autotuning) outside the timings
        misclassified = (model(x).argmax(1) != y).tolist()
    out = Path(args.out)
    log = out.with_suffix(".jsonl")
    setting = {"model": args.model, "device": device, "images": names, "seed": args.seed,
               "batch_size": args.batch_size}
    stored = stored_runs(log, setting)
    skipped: dict[str, str] = {}
    for a in attacks:
        for k in budgets:
            if str(k) in stored.get(a, {}):
                print(f"{a:8s} K={k:5d}  stored in {log}", file=sys.stderr, flush=True)
                continue
            try:
                run = run_attack(a, model, x, y, k, args.seed, args.batch_size,
                                 replay=not args.no_time and (args.time_all or k == budgets[-1]))
            except ImportError as e:  # e.g. hsj without foolbox
                skipped[a] = str(e)
                break
            run.update(summarize(run, misclassified))
            run = {kk: (_finite(vv) if isinstance(vv, float) else vv) for kk, vv in run.items()}
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as f:
                f.write(json.dumps({"setting": setting, "attack": a, "budget": k,
                                    "threads": torch.get_num_threads(), "run": run}) + "\n")
            stored.setdefault(a, {})[str(k)] = run
            print(f"{a:8s} K={k:5d}  median {fmt(run['median'])}  d½ {fmt(run['d_half_empirical'])}  "
                  f"success {run['success_rate']:.0%}  {run['seconds']:.1f} s", file=sys.stderr, flush=True)
    results = {a: dict(sorted(runs.items(), key=lambda kv: int(kv[0]))) for a, runs in stored.items() if runs}
    budgets = sorted({int(k) for runs in results.values() for k in runs})
    import advimage

    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    title = f"{args.model}, {len(names)} images, {device}"
    plot(results, budgets, png, title)
    result = {
        "model": args.model, "device": device,
        "device_name": (torch.cuda.get_device_name(0) if device.startswith("cuda")
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__, "advimage": advimage.__version__, "threads": torch.get_num_threads(),
        "images": names, "misclassified": misclassified, "budgets": budgets, "batch_size": args.batch_size,
        "seed": args.seed, "skipped": skipped, "plot": str(png),
        "results": results,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nHard-label attacks: {title} ({result['device_name']}), batch {args.batch_size}, seed {args.seed}\n")
    print("| attack | queries | median d | empirical d½ | success | s/image | attack / forwards |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for a, runs in results.items():
        for k, r in runs.items():
            ok = "" if r["verified"] and r["integer"] and r["max_queries"] <= int(k) else " (!)"
            print(f"| {a}{ok} | {k} | {fmt(r['median'])} | {fmt(r['d_half_empirical'])} | "
                  f"{r['success_rate']:.0%} | {fmt(r['seconds'] / len(names))} | {fmt(r.get('ratio'), '.2f')} |")
    for a, why in skipped.items():
        print(f"\n{a} skipped: {why}")
    print(f"\nJSON: {out}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
