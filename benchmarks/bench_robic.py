"""Time the RoBIC benchmark (white box + black box) per image, and SurFree's overhead over plain forwards.

Usage::

    python benchmarks/bench_robic.py [IMAGES ...] --model efficientnet_lite0 -n 16 \\
        [--steps 100] [--queries 5000] [--batch-size 16] [--device cuda] [--out benchmarks/out/robic.json] \\
        [--precision bf16] [--channels-last] [--compile]

Without IMAGES the five scikit-image photos are used (repeated up to N). Two measurements:

1. ``run_benchmark`` on N images (fresh run directory, bp + surfree, report included): wall time
   per image, and the per-stage seconds per image recorded in the rows;
2. the SurFree stage on one batch, against the same sequence of plain forward passes (same batch
   sizes, recorded by a forward hook, replayed under ``torch.no_grad``): their time ratio is
   SurFree's bookkeeping overhead (1.0 = the attack costs only its queries).

Writes JSON to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from advimage.cli_types import add_pass_arguments, pass_options


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _items(paths: list[str], n: int, tmp: Path):
    """N ImageItems: the given image set, or the bundled photos copied up to N files."""
    from advimage.data import ImageItem, discover
    from advimage.samples import SAMPLES, write_samples

    if paths:
        items = discover(paths)
        if len(items) < n:
            raise SystemExit(f"only {len(items)} images in {paths}, asked for {n}")
        return items[:n]
    src = write_samples(tmp / "photos")
    out = []
    for i in range(n):
        p = tmp / "set" / f"{i:04d}_{SAMPLES[i % len(SAMPLES)]}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src[i % len(src)], p)
        out.append(ImageItem(p))
    return out


def time_benchmark(items, args, run_dir: Path) -> dict:
    from advimage.bench import run_benchmark

    t0 = time.perf_counter()
    res = run_benchmark(items, args.model, attacks="bp,surfree", steps=args.steps, queries=args.queries,
                        seed=0, batch_size=args.batch_size, device=args.device, out=run_dir, quantizer="smart",
                        progress=not args.quiet, **pass_options(args))
    wall = time.perf_counter() - t0
    stage = {}
    for s in res.summaries:
        stage[s.attack] = {"seconds_per_image": s.seconds_per_image, "d_half": s.d_half_fit, "r2": s.r2,
                           "accuracy": s.accuracy}
    return {"images": len(items), "wall_seconds": wall, "seconds_per_image": wall / len(items),
            "stages": stage, "errors": res.n_errors, "markdown": res.markdown}


def time_surfree_vs_forwards(items, args) -> dict:
    from advimage.attacks import get
    from advimage.images import load_for_model
    from advimage.models import load_model

    model = load_model(args.model, device=args.device)
    dev = model.device
    batch = items[: args.batch_size]
    x = torch.stack([load_for_model(it.path, model.config) for it in batch]).to(dev).float()
    y = model.predict(x).to(dev)  # attack the model's own predictions: every image is attacked
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, inp: sizes.append(int(inp[0].shape[0])))
    model(x[:1])  # warm-up (cuDNN autotuning, lazy init) outside the timings
    sizes.clear()
    _sync(dev)
    t0 = time.perf_counter()
    res = get("surfree")(model, x, y, steps=args.queries, seed=0)
    _sync(dev)
    t_attack = time.perf_counter() - t0
    hook.remove()
    with torch.no_grad():
        _sync(dev)
        t0 = time.perf_counter()
        for m in sizes:
            model(x[:m])
        _sync(dev)
        t_fwd = time.perf_counter() - t0
    return {"batch_size": len(batch), "queries_budget": args.queries,
            "queries_mean": float(res.queries.float().mean()), "forward_calls": len(sizes),
            "images_forwarded": sum(sizes), "surfree_seconds": t_attack, "forwards_seconds": t_fwd,
            "ratio": t_attack / t_fwd if t_fwd > 0 else float("nan"),
            "surfree_seconds_per_image": t_attack / len(batch)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="image set (default: the bundled photos, repeated)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("-n", "--images-count", dest="n", type=int, default=16, help="number of images")
    p.add_argument("--steps", type=int, default=100, help="white-box gradient budget")
    p.add_argument("--queries", type=int, default=5000, help="black-box query budget")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/out/robic.json")
    p.add_argument("--keep", action="store_true", help="keep the run directory (printed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_pass_arguments(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    tmp = Path(tempfile.mkdtemp(prefix="bench_robic_"))
    try:
        items = _items(args.images, args.n, tmp)
        full = time_benchmark(items, args, tmp / "run")
        sf = time_surfree_vs_forwards(items, args)
    finally:
        if args.keep:
            print(f"run directory kept: {tmp / 'run'}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    import advimage

    result = {
        "model": args.model, "device": device, "passes": pass_options(args),
        "device_name": (torch.cuda.get_device_name(0) if device.startswith("cuda")
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__, "advimage": advimage.__version__, "threads": torch.get_num_threads(),
        "steps": args.steps, "queries": args.queries, "batch_size": args.batch_size,
        "benchmark": {k: v for k, v in full.items() if k != "markdown"}, "surfree_vs_forwards": sf,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    st = full["stages"]
    w, b = st.get("bp", {}), st.get("surfree", {})
    fmt = lambda v, f=".3g": "–" if v is None else format(v, f)  # noqa: E731
    print(f"\nRoBIC timing: {args.model} on {device} ({result['device_name']}), {full['images']} images, "
          f"batch {args.batch_size}, bp {args.steps} gradients, surfree {args.queries} queries\n")
    print("| measure | value |\n|---|--:|")
    print(f"| full benchmark, s/image (wall, white + black + report) | {fmt(full['seconds_per_image'])} |")
    print(f"| white box (bp + smart quantization + PNG check), s/image | {fmt(w.get('seconds_per_image'))} |")
    print(f"| black box (surfree + PNG check), s/image | {fmt(b.get('seconds_per_image'))} |")
    print(f"| SurFree on one batch, s | {fmt(sf['surfree_seconds'])} |")
    print(f"| same {sf['forward_calls']} forward passes ({sf['images_forwarded']} images), s | "
          f"{fmt(sf['forwards_seconds'])} |")
    print(f"| ratio SurFree / forwards | {fmt(sf['ratio'], '.2f')} |")
    print(f"| d½ white / black (pixel units) | {fmt(w.get('d_half'))} / {fmt(b.get('d_half'))} |")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
