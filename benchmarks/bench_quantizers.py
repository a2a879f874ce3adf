"""Quantizers compared on the same attack output (Table 7.1 setup): file distortion over the floats'.

One engine run at model size with several quantizers applied to the same BP output (the attack gets
``steps`` minus the largest quantizer gradient count, so every quantizer sees the same floats).
Reported per quantizer: success of the files over correctly classified images, mean file distortion,
the ratio of summed file distortion over summed float distortion on images where both succeed, and
the gradients/forwards it spent.

Usage: python benchmarks/bench_quantizers.py IMAGES [--limit 100] [--steps 100]
       [--quantizers none,smart,smart-prune] [--out benchmarks/out/quantizers.json]
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import advimage
from advimage.data import discover
from advimage.engine import Settings, run_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--attack", default="bp")
    p.add_argument("--quantizers", default="none,smart,smart-prune")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/out/quantizers.json")
    args = p.parse_args()
    model = advimage.load_model("efficientnet_lite0", device=args.device)
    items = discover(args.images)[:args.limit]
    qs = tuple(args.quantizers.split(","))
    settings = Settings(attack=args.attack, steps=args.steps, quantizers=qs, size="model")
    t0 = time.perf_counter()
    rows = []
    for s in range(0, len(items), args.batch_size):
        rows.extend(run_batch(model, items[s:s + args.batch_size], settings))
    seconds = time.perf_counter() - t0
    by = {q: {r.key: r for r in rows if r.quantizer == q} for q in qs}
    attacked = [k for k, r in by[qs[0]].items() if r.status not in ("misclassified", "error")]
    ref = by.get("none")
    results = []
    for q in qs:
        ok = [k for k in attacked if by[q][k].status == "fooled"]
        res = {"quantizer": q, "attacked": len(attacked), "success": len(ok) / max(1, len(attacked)),
               "mean_distortion": statistics.fmean(by[q][k].distortion for k in ok) if ok else None,
               "max_gradients": max(by[q][k].gradients for k in attacked),
               "mean_forwards": statistics.fmean(by[q][k].forwards for k in attacked)}
        if ref is not None:
            both = [k for k in ok if ref[k].status == "fooled"]
            res["over_floats"] = (sum(by[q][k].distortion for k in both) / sum(ref[k].distortion for k in both)
                                  if both else None)
        results.append(res)
    report = {"command": "python benchmarks/bench_quantizers.py " + " ".join(sys.argv[1:]), "steps": args.steps,
              "attack_steps": settings.attack_steps, "seconds": seconds, "torch_threads": torch.get_num_threads(),
              "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{args.attack} {settings.attack_steps} gradients, then each quantizer; {len(items)} images, "
          f"{len(attacked)} attacked; {seconds:.0f} s")
    print("| quantizer | success | mean d (files) | d / floats | max gradients | mean forwards |")
    print("|---|--:|--:|--:|--:|--:|")
    for r in results:
        d = "-" if r["mean_distortion"] is None else f"{r['mean_distortion']:.3f}"
        o = "-" if r.get("over_floats") is None else f"{r['over_floats']:.3f}"
        print(f"| {r['quantizer']} | {100 * r['success']:.1f}% | {d} | {o} | {r['max_gradients']} | "
              f"{r['mean_forwards']:.1f} |")


if __name__ == "__main__":
    main()
