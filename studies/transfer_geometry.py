"""Why attacks transfer (or not) between downscalers: geometry of the perturbations of a
``transfer-table`` run.

For each attack downscaler a and defense downscaler b, over the PNG files of the run
(δ = file − base image, at 600×600): the mean of

- ratio ‖D_b δ‖ / ‖D_a δ‖: how much of the perturbation the defense's model input receives,
  relative to what the attacked model input received;
- cos(D_b δ, D_a δ): whether it arrives in the same direction.

A file fools D_b's model when D_b δ is close to D_a δ (ratio ≈ 1, cosine ≈ 1), since the network
behind both is the same. No network is run.

Usage: python studies/transfer_geometry.py [--run runs/scaling-lite0] [--size 224]
Writes studies/out/transfer_geometry.json and prints two tables (rows: defense, columns: attack).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advimage.codec import decode
from advimage.resize import DOWNSCALERS, downscale

ORDER = ("bilinear", "bicubic", "area", "nearest", "bilg", "bilag")
SHORT = {"bilinear": "Bil", "bicubic": "Bic", "area": "Area", "nearest": "Near", "bilg": "BilG", "bilag": "BilAg"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/scaling-lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", default="studies/out/transfer_geometry.json")
    args = p.parse_args()
    run = Path(args.run)
    ratio = {b: {a: [] for a in ORDER} for b in ORDER}
    cosine = {b: {a: [] for a in ORDER} for b in ORDER}
    for a in ORDER:
        for f in sorted((run / "attacks" / a).glob("*.png")):
            base = decode((run / "bases" / f.name).read_bytes(), ".png").double()[None]
            delta = decode(f.read_bytes(), ".png").double()[None] - base
            if not delta.abs().sum():
                continue
            seen = {b: downscale(delta, args.size, b).flatten() for b in DOWNSCALERS}
            for b in ORDER:
                ratio[b][a].append(float(seen[b].norm() / seen[a].norm()))
                cosine[b][a].append(float(seen[b] @ seen[a] / (seen[b].norm() * seen[a].norm())))
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    out = {"run": str(run), "size": args.size,
           "ratio": {b: {a: mean(v) for a, v in r.items()} for b, r in ratio.items()},
           "cosine": {b: {a: mean(v) for a, v in r.items()} for b, r in cosine.items()},
           "files": {a: len(ratio[ORDER[0]][a]) for a in ORDER}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for name in ("ratio", "cosine"):
        print(f"\n{name}: rows defense b, columns attack a")
        print("| b \\ a | " + " | ".join(SHORT[a] for a in ORDER) + " |")
        print("|---|" + "--:|" * len(ORDER))
        for b in ORDER:
            print(f"| {SHORT[b]} | " + " | ".join(f"{out[name][b][a]:.2f}" for a in ORDER) + " |")


if __name__ == "__main__":
    main()
