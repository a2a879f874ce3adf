"""Each idea for the file/float gap measured alone on the same BP floats (issue 13, part 1).

BP runs once (``--steps`` gradients, model size, correctly classified images only); every variant
then quantizes the same floats:

- ``linear-opt``: the cheapest file *if the model were linear at the floats*: one gradient g at
  x_a, then the greedy integer optimum of min ||k||² s.t. L(x_a) + gᵀ(x0 + k - x_a) <= 0 (±1 units
  by |g_i| / (2j - 1), the marginal cost of the j-th unit, within [0, 255]); the file is built and
  checked with one forward. What one-shot quantization at x_a can reach, not a bound on files.
- ``scaled``, ``scaled-prune``: rounding of s u, the smallest adversarial s (and 2 pruning rounds).
- ``lattice`` (the quantizer, IRLS walk 30) and chains of walks (``irls:60``, ``prox:30``,
  ``int:60``, ``irls:30+prox:15``...): :func:`advimage.quantize.lattice.quantize_lattice` with
  ``walks`` (each chain followed by the scale search and one pruning round).
- ``bp-int:N``: integer iterates in BP's last steps (the issue's DDN idea): BP's boundary walk (L2)
  continued from x_a for N gradients, with the gradient and the success taken at the *rounded*
  iterate. DDN (Rony et al., CVPR 2019) replaces its iterate by the rounding; here the float
  iterate is kept and moves by BP's steps (a float "shadow" of the integer iterates):
  :func:`advimage.quantize.lattice.integer_walk`. The adversarial rounded iterate of least
  distortion is the file as it is, checked by one forward (else ``scaled`` on x_a); ``int:N`` is
  the same walk followed by the scale search and pruning.
- ``linear-opt>WALKS`` (e.g. ``linear-opt>prox:30``): the same walks started from ``linear-opt``'s
  file instead of BP's floats (where the walk finds no adversarial file, that file is rounded: a failure).

``--int-gamma-min`` sets γ's start in the integer walk (``int`` and ``bp-int``; default: the
library's 0.85) to compare with BP's 0.7.

Reported per variant: files adversarial over attacked images, mean file distortion, summed file
distortion over summed float distortion (images where both succeed; and over all files, adversarial
or not, for ``linear-opt``, whose files rarely are), mean gradients and forwards
of the quantizer (BP's not included), seconds.

Usage: python studies/lattice_walks.py IMAGES [--limit 100] [--steps 97] [--batch-size 16]
       [--variants linear-opt,scaled,scaled-prune,lattice,irls:60,prox:30,prox:60,irls:30+prox:15]
       [--int-gamma-min 0.85] [--out studies/out/lattice_walks.json]
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import advimage
from advimage.attacks import get as attack
from advimage.data import discover
from advimage.distortion import distortion
from advimage.oracle import LossOracle
from advimage.quantize import lattice, quantize_lattice, quantize_scaled, spec
from advimage.quantize.base import QuantizedImages

DEFAULT_VARIANTS = "linear-opt,scaled,scaled-prune,lattice,irls:60,prox:30,prox:60,irls:30+prox:15"


@torch.no_grad()
def linear_optimum(model, x0, xa, y, units: int = 4) -> QuantizedImages:
    """Greedy integer optimum of the loss linearized at x_a (module docstring); 1 gradient, 1 forward."""
    oracle = LossOracle(model, y)
    loss, g, _ = oracle.loss_and_grad(xa)
    files = []
    for i in range(len(x0)):
        gi, x0i = g[i].flatten().double(), x0[i].flatten().double()
        need = float(loss[i]) - float((gi * (xa[i].flatten().double() - x0i)).sum())  # L linearized at x0
        direction = -torch.sign(gi)
        j = torch.arange(1, units + 1, dtype=torch.float64)[:, None]  # unit index (units, n)
        inside = ((x0i + direction * j) >= 0) & ((x0i + direction * j) <= 255)
        efficiency = torch.where(inside, gi.abs() / (2 * j - 1), torch.zeros_like(j * gi))
        order = efficiency.flatten().argsort(descending=True)
        gains = (gi.abs().expand(units, -1).flatten())[order].cumsum(0)
        m = int(torch.searchsorted(gains, torch.tensor([max(need, 0.0)], dtype=torch.float64))[0]) + 1
        pixel = order[:m] % gi.numel()
        k = torch.zeros_like(gi).index_add_(0, pixel, torch.ones(m, dtype=torch.float64)) * direction
        files.append((x0i + k).view_as(x0[i]).float())
    pixels = torch.stack(files)
    success = oracle.success(oracle.logits(pixels))
    return QuantizedImages(pixels=pixels.to(torch.uint8), success=success, distortion=distortion(pixels, x0),
                           lam=torch.zeros(len(x0)), gradients=oracle.gradients, forwards=oracle.forwards,
                           suffix=".png")


@torch.no_grad()
def integer_iterates(model, x0, xa, y, steps: int) -> QuantizedImages:
    """``bp-int:N`` (module docstring): :func:`integer_walk`'s file as it is, checked by one more
    forward; N gradients and 2 forwards, plus ``scaled``'s 10 where the walk found no file."""
    x0 = x0.round()
    walked, walk_oracle = lattice.WALKS["int"](model, x0, xa, y, steps=steps)
    oracle = LossOracle(model, y)
    files = walked.round()
    found = oracle.success(oracle.logits(files))
    gradients = walk_oracle.gradients.clone()
    forwards = walk_oracle.forwards + oracle.forwards
    if not bool(found.all()):
        lost = (~found).nonzero().flatten()
        again = quantize_scaled(model, x0[lost], xa[lost], y[lost])
        files[lost] = again.pixels.float()
        found[lost] = again.success
        forwards[lost] += again.forwards.to(forwards)
    return QuantizedImages(pixels=files.to(torch.uint8), success=found, distortion=distortion(files, x0),
                           lam=torch.zeros(len(x0)), gradients=gradients, forwards=forwards, suffix=".png")


def run_variant(name: str, model, x0, xa, y) -> QuantizedImages:
    if name.startswith("bp-int:"):
        return integer_iterates(model, x0, xa, y, steps=int(name.split(":")[1]))
    if name.startswith("linear-opt>"):  # walks started from the linearized optimum's file, not from x_a
        start = linear_optimum(model, x0, xa, y)
        q = run_variant(name.split(">", 1)[1], model, x0, start.pixels.float(), y)
        q.gradients += start.gradients.to(q.gradients)
        q.forwards += start.forwards.to(q.forwards)
        return q
    if name == "linear-opt":
        return linear_optimum(model, x0, xa, y)
    if name == "scaled":
        return quantize_scaled(model, x0, xa, y)
    if name in ("scaled-prune", "lattice"):
        return spec(name).run(model, x0, xa, y)
    walks = [(part.split(":")[0], int(part.split(":")[1])) for part in name.split("+")]
    return quantize_lattice(model, x0, xa, y, walks=walks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--steps", type=int, default=97, help="BP's gradients (97: the Table 7.1 runs' floats)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--int-gamma-min", type=float, default=None,
                   help="γ's start in the integer walk (default: integer_walk's own, 0.85)")
    p.add_argument("--out", default="studies/out/lattice_walks.json")
    args = p.parse_args()
    if args.int_gamma_min is not None:  # quantize_lattice and bp-int look the walk up by its chain name
        lattice.WALKS["int"] = functools.partial(lattice.integer_walk, gamma_min=args.int_gamma_min)
    variants = args.variants.split(",")
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    items = discover(args.images)[:args.limit]
    x0 = torch.stack([advimage.load_for_model(it.path, model.config, it.data) for it in items]).float()
    y = torch.tensor([it.label for it in items])
    with torch.no_grad():
        correct = model(x0).argmax(1) == y
    x0, y = x0[correct], y[correct]
    names = [str(it.path) for it, ok in zip(items, correct.tolist()) if ok]
    batches = [slice(s, s + args.batch_size) for s in range(0, len(x0), args.batch_size)]
    t0 = time.perf_counter()
    xa, float_ok = [], []
    for b in batches:
        torch.manual_seed(args.seed)
        res = attack("bp")(model, x0[b], y[b], steps=args.steps)
        xa.append(res.x_adv)
        float_ok.append(res.success)
    xa, float_ok = torch.cat(xa), torch.cat(float_ok)
    float_d = distortion(xa, x0)
    bp_seconds = time.perf_counter() - t0
    print(f"BP {args.steps} gradients on {len(x0)} correctly classified images of {len(items)}: "
          f"floats adversarial {int(float_ok.sum())}, mean d {float_d[float_ok].mean():.3f}, {bp_seconds:.0f} s",
          flush=True)
    results = []
    for name in variants:
        t0 = time.perf_counter()
        parts = [run_variant(name, model, x0[b], xa[b], y[b]) for b in batches]
        seconds = time.perf_counter() - t0
        ok = torch.cat([q.success for q in parts])
        d = torch.cat([q.distortion for q in parts])
        both = ok & float_ok
        r = {"variant": name, "success": float(ok.float().mean()),
             "mean_distortion": float(d[ok].mean()) if ok.any() else None,
             "over_floats": float(d[both].sum() / float_d[both].sum()) if both.any() else None,
             "over_floats_all": float(d[float_ok].sum() / float_d[float_ok].sum()),
             "mean_gradients": float(torch.cat([q.gradients for q in parts]).float().mean()),
             "mean_forwards": float(torch.cat([q.forwards for q in parts]).float().mean()), "seconds": seconds,
             "per_image": [float(v) if o else None for v, o in zip(d.tolist(), ok.tolist())]}
        results.append(r)
        print(f"  {name}: {r['over_floats_all']:.3f} ({seconds:.0f} s)", flush=True)
    report = {"command": "python studies/lattice_walks.py " + " ".join(sys.argv[1:]), "steps": args.steps,
              "int_gamma_min": args.int_gamma_min,
              "images": names, "float_distortion": [float(v) for v in float_d], "bp_seconds": bp_seconds,
              "torch_threads": torch.get_num_threads(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nBP {args.steps} gradients, {len(x0)} images attacked, mean float distortion "
          f"{statistics.fmean(float_d[float_ok].tolist()):.3f}")
    print("| variant | files adversarial | mean d (adversarial files) | d / floats (both adversarial) "
          "| d / floats (all files) | gradients (mean) | forwards (mean) | s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for r in results:
        print(f"| {r['variant']} | {100 * r['success']:.1f}% | {f(r['mean_distortion'])} | {f(r['over_floats'])} | "
              f"{r['over_floats_all']:.3f} | {r['mean_gradients']:.1f} | {r['mean_forwards']:.1f} | "
              f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
