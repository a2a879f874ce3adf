"""Clean accuracy behind BilG under readings of the thesis's Gaussian prefilter (σ = 1.6 k, §9.3):
support 2⌈3σ⌉+1 (advimage's choice), a literal k×k support, and σ = 1.6 k / 3; BilAg and bilinear
for reference. On the base images (600×600) of a transfer-table run folder.

Usage: python studies/bilg_readings.py [--run runs/scaling-lite0] [--model efficientnet_lite0]
Writes studies/out/bilg_readings.json and prints a table.
"""
import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from advimage.codec import decode
from advimage.experiments.scaling import load_rows
from advimage.models import load_model
from advimage.resize import _filter_axis, downscale, kernel_size

p = argparse.ArgumentParser()
p.add_argument("--run", default="runs/scaling-lite0")
p.add_argument("--model", default="efficientnet_lite0")
args = p.parse_args()
out = Path(args.run)
rows = [asdict(r) for r in load_rows(out, "bilinear")]  # the run's store (or an older rows.jsonl)
model = load_model(args.model, device="cpu")
size = model.config.input_size
print("| downscaler | clean accuracy (%) |\n|---|--:|")
def gaussian(k, support):
    s = 1.6 * k
    r = (support - 1) // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t * t / (2 * s * s))
    return g / g.sum()
def bilg(x, size, support):
    for dim in (2, 3):
        k = kernel_size(x.shape[dim], size)
        taps = gaussian(k, support(k))
        x = _filter_axis(x, taps, (taps.numel() - 1) // 2, dim)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
variants = {
    "bilg, support 2ceil(3 sigma)+1 (ours)": lambda x: downscale(x, size, "bilg"),
    "bilg, literal k x k support": lambda x: bilg(x, size, lambda k: k),
    "bilg, sigma = 1.6 k / 3 (support 2ceil(3 sigma)+1)": None,
    "bilag": lambda x: downscale(x, size, "bilag"),
    "bilinear": lambda x: downscale(x, size, "bilinear"),
}
def bilg_small(x):
    for dim in (2, 3):
        k = kernel_size(x.shape[dim], size)
        s = 1.6 * k / 3
        r = math.ceil(3 * s)
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-t * t / (2 * s * s))
        g = g / g.sum()
        x = _filter_axis(x, g, r, dim)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
variants["bilg, sigma = 1.6 k / 3 (support 2ceil(3 sigma)+1)"] = bilg_small
res = {}
for name, fn in variants.items():
    correct = 0
    for r in rows:
        x = decode((out / "bases" / r["image"]).read_bytes(), ".png").float()[None]
        with torch.no_grad():
            correct += int(model(fn(x)).argmax(1)) == r["label"]
    res[name] = 100 * correct / len(rows)
    print(f"| {name} | {res[name]:.1f} |", flush=True)
Path("studies/out").mkdir(exist_ok=True, parents=True)
Path("studies/out/bilg_readings.json").write_text(json.dumps(res, indent=2))
