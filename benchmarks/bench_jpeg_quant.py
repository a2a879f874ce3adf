"""Cost of smart quantization (spatial §7.2 and JPEG §7.3) relative to the attack it follows.

For N images: one best-effort attack (BP, ``--steps`` gradients) on the originals, then the
spatial quantizer and the JPEG quantizer at each ``--qualities`` on its output (the JPEG one
with ``verify=True``: the file is written and decoded by Pillow). Reports, per image, the
forward and gradient passes and the seconds of each stage, and their ratio to the attack's.
Writes JSON (``--out``) and prints a table. Not a test; CPU timings depend on the machine.

    python benchmarks/bench_jpeg_quant.py 8 --steps 100 --qualities 90,75
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, nargs="?", default=4, help="number of images (default 4)")
    p.add_argument("--images", default="/work/shared/data/imagenet-sample", help="image set")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attack", default="bp")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--qualities", default="90,75", help="comma-separated JPEG quality factors")
    p.add_argument("--df", type=float, default=1)
    p.add_argument("--n-lambda", type=int, default=10, help="JPEG quantizer: n + 1 lambda values")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/out/jpeg_quant.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from advimage.attacks import get as get_attack
    from advimage.data import discover
    from advimage.images import load_for_model
    from advimage.models import load_model
    from advimage.quantize import quantize_spatial
    from advimage.quantize.jpeg import quantize_jpeg

    qualities = [int(q) for q in args.qualities.split(",") if q.strip()]
    model = load_model(args.model, device=args.device)
    items = discover([args.images])[: args.n]
    x0 = torch.stack([load_for_model(it.path, model.config) for it in items]).to(model.device)
    y = torch.tensor([it.label for it in items], device=model.device)
    n = len(items)
    model.predict(x0[:1].float())  # warm-up

    res, t_attack = _timed(lambda: get_attack(args.attack)(model, x0.float(), y, steps=args.steps))
    stages = {args.attack: {"seconds": t_attack, "gradients": res.gradients.float().mean().item(),
                            "forwards": res.forwards.float().mean().item(),
                            "success": res.success.float().mean().item()}}
    q, t = _timed(lambda: quantize_spatial(model, x0, res.x_adv, y, df=args.df))
    stages["spatial"] = {"seconds": t, "gradients": q.gradients.float().mean().item(),
                         "forwards": q.forwards.float().mean().item(), "success": q.success.float().mean().item()}
    for quality in qualities:
        qj, t = _timed(lambda: quantize_jpeg(model, x0.float(), res.x_adv, y, quality=quality,  # noqa: B023  (run now)
                                             df=args.df, n=args.n_lambda))
        stages[f"jpeg{quality}"] = {"seconds": t, "gradients": qj.gradients.float().mean().item(),
                                    "forwards": qj.forwards.float().mean().item(),
                                    "success": qj.success.float().mean().item()}
    base = stages[args.attack]
    for s in stages.values():
        s["seconds_per_image"] = s["seconds"] / n
        s["seconds_ratio"] = s["seconds"] / base["seconds"]
        s["passes_ratio"] = (s["gradients"] + s["forwards"]) / (base["gradients"] + base["forwards"])
    report = {"model": args.model, "attack": args.attack, "steps": args.steps, "images": n, "df": args.df,
              "n_lambda": args.n_lambda, "threads": args.threads, "device": str(model.device),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "stages": stages}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))

    print(f"{args.model}, {n} images, {args.attack} {args.steps} gradients, {args.threads} thread(s), {model.device}")
    print(f"{'stage':<10} {'grads/img':>9} {'fwds/img':>9} {'s/img':>8} {'passes/attack':>14} {'time/attack':>12} "
          f"{'success':>8}")
    for name, s in stages.items():
        print(f"{name:<10} {s['gradients']:>9.1f} {s['forwards']:>9.1f} {s['seconds_per_image']:>8.3f} "
              f"{s['passes_ratio']:>14.3f} {s['seconds_ratio']:>12.3f} {100 * s['success']:>7.1f}%")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
