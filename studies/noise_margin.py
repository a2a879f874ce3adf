"""How much numerical noise moves a classifier's logits, and what a noise margin κ₀ costs.

Part 1 (noise): the originals at their own size, through torchvision's float eval transform, are
classified by EfficientNet-Lite0 under conditions a user's machine may differ in: 1 vs 2 intra-op
threads, batch 1 vs batch N, bf16 autocast, and an 8-bit-style verifier that clamps the bicubic
resize to [0, 255]. Reported per condition: the largest and 99th-percentile change of the logit
margin m = z_top1 − z_top2 (ranking of the reference) over the images.

Part 2 (files): for each κ in ``--margins``, the default files of ``advimage attack`` (native size,
BP, ``auto`` quantizer, victim ``pil+both``) with margin κ (one attack, the quantizer run once per
κ as ``QUANTIZER+margin:κ``) are checked under: the
engine's two paths (PIL 8-bit, float), float + clamp after the resize, batch 1 vs batch N, and
1 vs 2 threads. Reported: files that fool every one, their mean distortion, the price of κ.

Usage: python studies/noise_margin.py IMAGES [--limit 20] [--noise-images 32]
    [--margins 0,0.05] [--out studies/out/noise_margin.json]
Writes JSON and prints two tables.
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
from advimage import codec, verify
from advimage.data import discover
from advimage.engine import Settings, run_batch
from advimage.images import read_image


def top2_margin(logits: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """z[first] − z[second] for each row, the pair given by ``ranks`` (N, 2)."""
    return logits.gather(1, ranks[:, :1])[:, 0] - logits.gather(1, ranks[:, 1:2])[:, 0]


@torch.no_grad()
def classify(model, inputs: torch.Tensor, *, batch: int, threads: int, bf16: bool = False) -> torch.Tensor:
    """Logits (N, C) of model inputs (N, 3, S, S) in pixels, ``batch`` at a time, ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.cat([model(inputs[i:i + batch]).float() for i in range(0, len(inputs), batch)])
    finally:
        torch.set_num_threads(before)


def clamped_float(x: torch.Tensor, config) -> torch.Tensor:
    """torchvision's float eval transform, then clamped to [0, 255] as 8-bit pipelines do."""
    return verify.eval_float(x, config).clamp(0, 255)


def noise(model, xs: list[torch.Tensor], threads: int) -> dict[str, dict[str, float]]:
    config = model.config
    inputs = torch.stack([verify.eval_float(x.float(), config) for x in xs])
    ref = classify(model, inputs, batch=1, threads=threads)
    ranks = ref.topk(2, dim=1).indices
    m_ref = top2_margin(ref, ranks)
    conditions = {
        "1 thread": classify(model, inputs, batch=1, threads=1),
        f"batch {len(xs)}": classify(model, inputs, batch=len(xs), threads=threads),
        "clamp after resize": classify(model, torch.stack([clamped_float(x.float(), config) for x in xs]),
                                       batch=1, threads=threads),
        "bf16 autocast": classify(model, inputs, batch=1, threads=threads, bf16=True),
    }
    out = {}
    for name, logits in conditions.items():
        d = (top2_margin(logits, ranks) - m_ref).abs()
        out[name] = {"max": float(d.max()), "p99": float(d.quantile(0.99)), "median": float(d.median()),
                     "max_logit_change": float((logits - ref).abs().max())}
    return out


def check_files(model, rows, threads: int) -> list[dict[str, bool]]:
    """Per file: fooled under each verifier (label = the row's)."""
    config = model.config
    files = [r for r in rows if r.data is not None and r.status in ("fooled", "failed")]
    if not files:
        return []
    x = [codec.decode(r.data, r.suffix).float() for r in files]
    labels = torch.tensor([r.label for r in files])
    float_in = torch.stack([verify.eval_float(xi, config) for xi in x])
    pil_in = torch.stack([verify.eval_pil(codec.decode_pil(r.data), config) for r in files])
    clamp_in = torch.stack([clamped_float(xi, config) for xi in x])
    logits = {
        "pil": classify(model, pil_in, batch=1, threads=threads),
        "float": classify(model, float_in, batch=1, threads=threads),
        "float+clamp": classify(model, clamp_in, batch=1, threads=threads),
        f"pil, batch {len(files)}": classify(model, pil_in, batch=len(files), threads=threads),
        f"float, batch {len(files)}": classify(model, float_in, batch=len(files), threads=threads),
        "pil, 1 thread": classify(model, pil_in, batch=1, threads=1),
        "float, 1 thread": classify(model, float_in, batch=1, threads=1),
    }
    fooled = {k: (v.argmax(1) != labels).tolist() for k, v in logits.items()}
    return [{k: fooled[k][i] for k in fooled} for i in range(len(files))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=20, help="images attacked in part 2")
    p.add_argument("--noise-images", type=int, default=32, help="images classified in part 1")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--margins", default="0,0.05", help="κ values of part 2 (logits)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", default="studies/out/noise_margin.json")
    args = p.parse_args()
    threads = torch.get_num_threads()
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    items = discover(args.images)
    t0 = time.perf_counter()
    spread = noise(model, [read_image(it.path) for it in items[:args.noise_images]], threads)
    print(f"| condition (vs fp32, batch 1, {threads} threads) | max Δm | p99 Δm | median Δm | max Δz |")
    print("|---|--:|--:|--:|--:|")
    for name, s in spread.items():
        print(f"| {name} | {s['max']:.2e} | {s['p99']:.2e} | {s['median']:.2e} | {s['max_logit_change']:.2e} |")
    kappas = [float(m) for m in args.margins.split(",")]
    # one attack for every κ: the margin only changes the quantizer (its own +margin:κ)
    default = Settings(steps=args.steps).quantizers[0]
    names = [f"{default}+margin:{k:g}" for k in kappas]
    settings = Settings(steps=args.steps, quantizers=tuple(names))
    rows = []
    for s in range(0, args.limit, args.batch_size):
        rows.extend(run_batch(model, items[s:min(s + args.batch_size, args.limit)], settings))
        print(f"{min(s + args.batch_size, args.limit)}/{args.limit} images ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    results = []
    for kappa, name in zip(kappas, names):
        mine = [r for r in rows if r.quantizer == settings.quantizers[names.index(name)]]
        attacked = [r for r in mine if r.status in ("fooled", "failed")]
        checks = check_files(model, mine, threads)
        fooled = [r for r in attacked if r.status == "fooled"]
        results.append({
            "margin": kappa, "quantizer": default, "attacked": len(attacked),
            "engine_verified": len(fooled),
            "fool_every_verifier": sum(all(c.values()) for c in checks),
            "per_verifier": {k: sum(c[k] for c in checks) for k in (checks[0] if checks else {})},
            "mean_distortion": statistics.fmean(r.distortion for r in fooled) if fooled else None,
            "min_file_margin": min((r.file_margin for r in fooled), default=None),
            "files": [{"image": r.key, "distortion": r.distortion, "file_margin": r.file_margin,
                       "verified": r.verified} for r in attacked]})
    base = results[0]["mean_distortion"]
    print("\n| κ (logits) | files (engine) | fool every verifier | mean d | price vs first κ | min file margin |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in results:
        d = r["mean_distortion"]
        price = "-" if d is None or not base else f"{d / base:.3f}×"
        print(f"| {r['margin']:g} | {r['engine_verified']}/{r['attacked']} | "
              f"{r['fool_every_verifier']}/{r['attacked']} | {'-' if d is None else f'{d:.4f}'} | {price} | "
              f"{r['min_file_margin']:.4f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": "python studies/noise_margin.py " + " ".join(sys.argv[1:]), "threads": threads,
        "noise": spread, "results": results, "seconds": time.perf_counter() - t0}, indent=2))


if __name__ == "__main__":
    main()
