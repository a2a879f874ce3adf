"""Cost of the steganographic quantizers (Ch. 8) as a multiple of the attack's, in one run.

The centre crops of N photos (Lanczos to --size, as ``advimage experiment stego-table`` makes its
covers), attacked once by best-effort PGD2 (--steps gradients); then each quantizer on the same
float output, timed alone, at each df. Reported per quantizer and df: seconds per image over the
attack's seconds per image, forward passes and gradients per image, success of the quantized
images, mean L2 (‖x_q − x0‖₂, Ch. 8's unit).

Usage: python benchmarks/bench_stego.py IMAGES [--limit 16] [--size 128] [--steps 40]
       [--out benchmarks/out/stego.json]
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import advimage
from advimage.attacks import get as get_attack
from advimage.data import discover
from advimage.experiments.stego_pairs import crop_boxes
from advimage.images import read_pil
from advimage.quantize import run as run_quantizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--quantizer-steps", type=int, default=12)
    p.add_argument("--gina-steps", type=int, default=4)
    p.add_argument("--quantizers", default="smart,hill,mipod,gina")
    p.add_argument("--dfs", default="1,3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/stego.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    xs, ys = [], []
    for item in [i for i in discover(args.images) if i.label is not None]:
        img = read_pil(item.path)
        crop = img.crop(crop_boxes(img.width, img.height, 1, 0)[0]).resize((args.size, args.size), Image.LANCZOS)
        x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float()
        with torch.no_grad():
            if int(model(x[None]).argmax(1)) != item.label:
                continue  # attacked only if correctly classified, as in the thesis
        xs.append(x)
        ys.append(item.label)
        if len(xs) == args.limit:
            break
    x0, y = torch.stack(xs), torch.tensor(ys)
    t0 = time.perf_counter()
    adv = get_attack("pgd")(model, x0, y, steps=args.steps)
    attack_s = (time.perf_counter() - t0) / len(x0)
    rows = []
    for df in [int(d) for d in args.dfs.split(",")]:
        for q in args.quantizers.split(","):
            t1 = time.perf_counter()
            out = run_quantizer(q, model, x0, adv.x_adv, y, df=df,
                                steps=args.gina_steps if q == "gina" else args.quantizer_steps)
            s = (time.perf_counter() - t1) / len(x0)
            ok = out.success & adv.success
            l2 = (out.pixels.float() - x0).flatten(1).norm(dim=1)
            rows.append({"quantizer": q, "df": df, "df_ch8": df + 1, "seconds_per_image": s,
                         "ratio_to_attack": s / attack_s, "forwards": float(out.forwards.float().mean()),
                         "gradients": float(out.gradients.float().mean()),
                         "kept": int(ok.sum()), "attack_successes": int(adv.success.sum()),
                         "mean_l2": float(l2[ok].mean()) if ok.any() else None})
    result = {"command": "python benchmarks/bench_stego.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
              "images": len(x0), "size": args.size, "attack": "pgd", "attack_steps": args.steps,
              "attack_seconds_per_image": attack_s, "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(x0)} images at {args.size}px, PGD2 {args.steps} gradients: {attack_s:.3f} s/image")
    print(f"{'quantizer':>10} {'df(Ch.8)':>8} {'s/image':>8} {'x attack':>8} {'fwd':>6} {'kept':>6} {'mean L2':>8}")
    for r in rows:
        l2 = f"{r['mean_l2']:.1f}" if r["mean_l2"] is not None else "-"
        print(f"{r['quantizer']:>10} {r['df_ch8']:>8} {r['seconds_per_image']:8.3f} {r['ratio_to_attack']:8.2f} "
              f"{r['forwards']:6.1f} {r['kept']:>3}/{r['attack_successes']:<2} {l2:>8}")


if __name__ == "__main__":
    main()
