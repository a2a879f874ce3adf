"""The price of a margin, and what it buys: files that survive a victim's re-encoding or resizing.

For each margin κ (logit units), one engine run at model size (BP + smart quantization, PNG) on the
same images; each verified file is then put through what a victim might do to it before
classifying: JPEG re-encoding at quality 100 and 90 (Pillow, 4:4:4) and an 8-bit resize (Pillow
bicubic down to 7/8 of the side and back up). Reported: mean file distortion, and the fraction of
files still adversarial after each transformation.

Usage: python studies/margin.py IMAGES [--limit 24] [--margins 0,2,5,10] [--out FILE]
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import advimage
from advimage import codec
from advimage.data import discover
from advimage.engine import Settings, run_batch


def transformed(data: bytes) -> dict[str, torch.Tensor]:
    """The file after each victim-side transformation, as float pixels (3, H, W)."""
    img = codec.decode_pil(data)
    out = {}
    for q in (100, 90):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q, subsampling=0)
        out[f"jpeg{q}"] = codec.decode(buf.getvalue()).float()
    w, h = img.size
    small = img.resize((w * 7 // 8, h * 7 // 8), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    out["resize8bit"] = torch.from_numpy(np.array(small)).permute(2, 0, 1).float()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--margins", default="0,2,5,10")
    p.add_argument("--out", default="studies/out/margin.json")
    args = p.parse_args()
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    items = discover(args.images)[:args.limit]
    results = []
    for kappa in (float(m) for m in args.margins.split(",")):
        rows = []
        for s in range(0, len(items), 8):
            settings = Settings(steps=args.steps, size="model", margin=kappa, quantizers=("smart",))
            rows.extend(run_batch(model, items[s:s + 8], settings))
        attacked = [r for r in rows if r.status in ("fooled", "failed")]
        fooled = [r for r in attacked if r.status == "fooled"]
        survive = {k: 0 for k in ("jpeg100", "jpeg90", "resize8bit")}
        for r in fooled:
            with torch.no_grad():
                for k, x in transformed(r.data).items():
                    survive[k] += int(model(x[None]).argmax(1)[0] != r.label)
        results.append({"margin": kappa, "attacked": len(attacked), "files": len(fooled) / max(1, len(attacked)),
                        "mean_distortion": statistics.fmean(r.distortion for r in fooled) if fooled else None,
                        **{f"survive_{k}": v / max(1, len(attacked)) for k, v in survive.items()}})
        print(f"margin {kappa:g} done", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python studies/margin.py " + " ".join(sys.argv[1:]),
                                          "results": results}, indent=2))
    print("| margin κ | files adversarial | mean d | after JPEG100 | after JPEG90 | after 8-bit resize |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in results:
        d = "-" if r["mean_distortion"] is None else f"{r['mean_distortion']:.3f}"
        print(f"| {r['margin']:g} | {100 * r['files']:.0f}% | {d} | {100 * r['survive_jpeg100']:.0f}% | "
              f"{100 * r['survive_jpeg90']:.0f}% | {100 * r['survive_resize8bit']:.0f}% |")


if __name__ == "__main__":
    main()
