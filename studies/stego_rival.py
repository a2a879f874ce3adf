"""Eq. 8.10's fixed rival class vs the run's criterion, for the Ch. 8 quantizers, on one attack.

The centre crops of N photos (Lanczos to --size, as ``advimage experiment stego-table`` and
``benchmarks/bench_stego.py`` make their covers), the correctly classified ones attacked once by
best-effort PGD2 (--steps gradients). Then each quantizer twice on the same float output: as it is
(the rival class is the best other class wherever the loss is evaluated, eqs. 4.15-4.16) and with
``+rival:fixed`` (c_a, the class reached at x_a, held fixed: eq. 8.10; the file must make c_a beat
c0, eq. 8.11). Every file is encoded as PNG, decoded and classified again.

Reported per quantizer, d_f and rule: files misclassified (of PGD2's successes), files where c_a
beats c0 (eq. 8.11), files whose predicted class is c_a, mean L2 = ‖x_q − x0‖₂ (Ch. 8's unit) over
the misclassified files, the paired L2 ratio fixed / plain (mean, max) over images where both files
are misclassified, and how many images get two files of the same L2.

Usage: python studies/stego_rival.py IMAGES [--limit 32] [--size 128] [--steps 40]
    [--quantizers smart,hill,mipod,gina] [--dfs 1,3] [--out studies/out/stego_rival.json]
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
from advimage import codec
from advimage.attacks import get as get_attack
from advimage.criteria import rival_classes
from advimage.data import discover
from advimage.experiments.stego_pairs import crop_boxes
from advimage.images import read_pil
from advimage.quantize import run as run_quantizer


def covers(model, images: list[str], limit: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` correctly classified centre crops (N, 3, size, size) in [0, 255] and labels (N,)."""
    xs, ys = [], []
    for item in [i for i in discover(images) if i.label is not None]:
        img = read_pil(item.path)
        crop = img.crop(crop_boxes(img.width, img.height, 1, 0)[0]).resize((size, size), Image.LANCZOS)
        x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float()
        with torch.no_grad():
            if int(model(x[None]).argmax(1)) != item.label:
                continue
        xs.append(x)
        ys.append(item.label)
        if len(xs) == limit:
            break
    return torch.stack(xs), torch.tensor(ys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--quantizer-steps", type=int, default=12)
    p.add_argument("--gina-steps", type=int, default=4)
    p.add_argument("--quantizers", default="smart,hill,mipod,gina")
    p.add_argument("--dfs", default="1,3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="studies/out/stego_rival.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    x0, y = covers(model, args.images, args.limit, args.size)
    adv = get_attack("pgd")(model, x0, y, steps=args.steps)
    with torch.no_grad():
        adv_logits = model(adv.x_adv)
        c_a = rival_classes(adv_logits, y)
    rows = []
    for df in [int(d) for d in args.dfs.split(",")]:
        for q in args.quantizers.split(","):
            steps = args.gina_steps if q == "gina" else args.quantizer_steps
            per_rule = {}
            for rule, name in (("plain", q), ("fixed", f"{q}+rival:fixed")):
                t1 = time.perf_counter()
                out = run_quantizer(name, model, x0, adv.x_adv, y, df=df, steps=steps)
                seconds = time.perf_counter() - t1
                files = torch.stack([codec.decode(codec.encode_png(px.cpu())).float() for px in out.pixels])
                with torch.no_grad():
                    logits = model(files)
                own = logits.gather(1, y[:, None])[:, 0]
                fooled = (logits.argmax(1) != y) & adv.success
                beats = (logits.gather(1, c_a[:, None])[:, 0] > own) & adv.success
                is_ca = (logits.argmax(1) == c_a) & adv.success
                l2 = (files - x0).flatten(1).norm(dim=1)
                per_rule[rule] = (fooled, l2)
                rows.append({"quantizer": q, "spec": name, "rule": rule, "df": df, "df_ch8": df + 1,
                             "attack_successes": int(adv.success.sum()), "fooled": int(fooled.sum()),
                             "c_a_beats_c0": int(beats.sum()), "predicted_c_a": int(is_ca.sum()),
                             "reported_success": int((out.success & adv.success).sum()),
                             "mean_l2": float(l2[fooled].mean()) if fooled.any() else None,
                             "forwards": float(out.forwards.float().mean()), "seconds": seconds})
            both = per_rule["plain"][0] & per_rule["fixed"][0]
            ratio = (per_rule["fixed"][1][both] / per_rule["plain"][1][both]) if both.any() else None
            rows[-1]["paired_l2_ratio"] = float(ratio.mean()) if ratio is not None else None
            rows[-1]["paired_l2_ratio_max"] = float(ratio.max()) if ratio is not None else None
            rows[-1]["paired_images"] = int(both.sum())
            # images whose two files have the same L2 (float equality; pixels not compared)
            rows[-1]["same_l2"] = int((per_rule["plain"][1] == per_rule["fixed"][1])[adv.success].sum())
    result = {"command": "python studies/stego_rival.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
              "images": len(x0), "size": args.size, "attack": "pgd", "attack_steps": args.steps,
              "attack_successes": int(adv.success.sum()),
              "attack_c_a_is_prediction": int(((adv_logits.argmax(1) == c_a) & adv.success).sum()),
              "seconds": time.perf_counter() - t_start, "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(x0)} images at {args.size}px, PGD2 {args.steps} gradients: {int(adv.success.sum())} successes; "
          f"{result['seconds']:.0f} s")
    print(f"{'quantizer':>22} {'d_f':>3} {'fooled':>7} {'c_a>c0':>7} {'pred c_a':>8} {'mean L2':>8} "
          f"{'fixed/plain':>11}")
    for r in rows:
        l2 = f"{r['mean_l2']:.1f}" if r["mean_l2"] is not None else "-"
        ratio = f"{r['paired_l2_ratio']:.3f}" if r.get("paired_l2_ratio") is not None else ""
        print(f"{r['spec']:>22} {r['df_ch8']:>3} {r['fooled']:>3}/{r['attack_successes']:<3} {r['c_a_beats_c0']:>7} "
              f"{r['predicted_c_a']:>8} {l2:>8} {ratio:>11}")


if __name__ == "__main__":
    main()
