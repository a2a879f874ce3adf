"""Core benchmark: BP's overhead over plain forward+backward passes, and advimage vs peer libraries.

(1) BP best-effort at N gradients per image vs N forward+backward passes of the same model at the
    same batch size, timed in one run (ratio).
(2) On the same correctly classified images and budget: foolbox's DDN (100 steps) and
    torchattacks' CW (100 steps) vs advimage's BP + smart quantization: median float distortion,
    time per image, and the fraction still adversarial once saved as an 8-bit PNG and read back.

(3) ``--passes fp32,bf16,channels_last,compile`` (or ``+`` mixes): BP and the quantizer through
    each kind of pass (:mod:`advimage.models.fast`), timed against forward+backward passes of the
    same kind; the quantizer runs in fp32 and the files are checked by the fp32 model.

Usage: python benchmarks/bench_core.py IMAGES [--limit 16] [--steps 100] [--batch-size 16]
       [--passes fp32] [--peers foolbox_ddn,torchattacks_cw] [--out FILE]
Writes JSON and prints a table. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import advimage
from advimage import codec
from advimage.data import discover
from advimage.distortion import distortion
from advimage.images import load_for_model
from advimage.models.fast import fast_classifier


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def png_roundtrip(x: torch.Tensor) -> torch.Tensor:
    """Round float pixels (N, 3, H, W) to 8 bits, encode as PNG in memory, decode with Pillow."""
    imgs = x.detach().round().clamp(0, 255).to(torch.uint8).cpu()
    return torch.stack([codec.decode(codec.encode_png(img)) for img in imgs]).to(x.device).float()


def time_forward_backward(model, x, y, n: int) -> float:
    """Seconds for n forward+backward passes of the margin loss at this batch."""
    from advimage.losses import adversarial_loss

    sync(x.device)
    t0 = time.perf_counter()
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        loss = adversarial_loss(model(xi), y)
        torch.autograd.grad(loss.sum(), xi)
    sync(x.device)
    return time.perf_counter() - t0


class UnitRange(torch.nn.Module):
    """Adapter for peer libraries working in [0, 1]: multiplies by 255 before the pixel model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x * 255.0)


def run_peer(name: str, model, x, y, steps: int) -> tuple[torch.Tensor, float]:
    """Adversarial floats in [0, 255] from a peer library and the seconds it took."""
    wrapped = UnitRange(model).eval()
    x01 = x / 255.0
    sync(x.device)
    t0 = time.perf_counter()
    if name == "foolbox_ddn":
        import foolbox as fb

        fmodel = fb.PyTorchModel(wrapped, bounds=(0, 1))
        _, adv, _ = fb.attacks.DDNAttack(steps=steps)(fmodel, x01, fb.criteria.Misclassification(y), epsilons=None)
    elif name == "torchattacks_cw":
        import torchattacks

        adv = torchattacks.CW(wrapped, c=1, kappa=0, steps=steps, lr=0.01)(x01, y)
    else:
        raise KeyError(name)
    sync(x.device)
    return adv.detach() * 255.0, time.perf_counter() - t0


def pass_options(variant: str) -> dict:
    """``fp32``, ``bf16``, ``channels_last``, ``compile`` or a ``+``-joined mix -> fast_classifier's options."""
    parts = set(variant.split("+"))
    unknown = parts - {"fp32", "bf16", "channels_last", "compile"}
    if unknown:
        raise SystemExit(f"unknown pass option(s) {sorted(unknown)}; use fp32, bf16, channels_last, compile")
    return dict(precision="bf16" if "bf16" in parts else "fp32", channels_last="channels_last" in parts,
                compile="compile" in parts)


def time_bp(fast, model, x, y, steps: int, batch_size: int) -> dict:
    """BP (``steps`` gradients) through ``fast``, timed against ``steps`` forward+backward passes of
    ``fast``, then smart quantization by ``model`` (fp32, as the engine does); the files are read
    back and checked by ``model``."""
    dev = x.device
    t_bp = t_fb = t_q = 0.0
    advs, succ_float, d_float, q_imgs = [], [], [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        time_forward_backward(fast, xb, yb, 2)  # warm-up (and compilation, for compile)
        t_fb += time_forward_backward(fast, xb, yb, steps)
        sync(dev)
        t0 = time.perf_counter()
        res = advimage.attack(fast, xb, yb, attack="bp", steps=steps)
        sync(dev)
        t_bp += time.perf_counter() - t0
        t0 = time.perf_counter()
        q = advimage.quantize_spatial(model, xb, res.x_adv, yb, df=1)  # in fp32, as the engine does
        sync(dev)
        t_q += time.perf_counter() - t0
        advs.append(res.x_adv)
        succ_float.append(res.success)
        d_float.append(res.distortion)
        q_imgs.append(q.pixels)
    x_bp = torch.cat(advs)
    xq_file = png_roundtrip(torch.cat(q_imgs).float())
    ok_file = model.predict(xq_file) != y
    return {
        "bp_seconds": t_bp, "forward_backward_seconds": t_fb, "quantize_seconds": t_q,
        "bp_over_forward_backward": t_bp / t_fb,
        "median_float_distortion": float(torch.cat(d_float).median()),
        "median_file_distortion": float(distortion(xq_file, x)[ok_file].median()) if ok_file.any() else None,
        "float_success": float(torch.cat(succ_float).float().mean()),
        "float_success_fp32": float((model.predict(x_bp) != y).float().mean()),
        "png_success": float(ok_file.float().mean()),
        "rounded_png_success": float((model.predict(png_roundtrip(x_bp)) != y).float().mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--peers", default="foolbox_ddn,torchattacks_cw")
    p.add_argument("--passes", default="fp32",
                   help="comma-separated kinds of pass timed for BP, the first the reference: fp32, bf16, "
                        "channels_last, compile, or a + mix (e.g. fp32,bf16,bf16+channels_last,compile)")
    p.add_argument("--out", default="benchmarks/out/core.json")
    args = p.parse_args()

    model = advimage.load_model(args.model, device=args.device)
    dev = model.device
    items = discover(args.images)
    x_all = torch.stack([load_for_model(i.path, model.config) for i in items[: args.limit * 2]]).float().to(dev)
    y_all = torch.tensor([i.label for i in items[: args.limit * 2]], device=dev)
    keep = (model.predict(x_all) == y_all).nonzero().flatten()[: args.limit]
    x, y = x_all[keep], y_all[keep]
    n = len(x)
    methods: dict[str, dict] = {}

    # (1) overhead of BP over the same number of forward+backward passes, for each kind of pass
    passes: dict[str, dict] = {}
    for variant in [v for v in args.passes.split(",") if v]:
        fast = fast_classifier(model, **pass_options(variant))
        passes[variant] = time_bp(fast, model, x, y, args.steps, args.batch_size)
    base = passes[next(iter(passes))]
    t_bp, t_fb, t_q = base["bp_seconds"], base["forward_backward_seconds"], base["quantize_seconds"]
    methods["advimage_bp_smart"] = {k: base[k] for k in ("median_float_distortion", "median_file_distortion",
                                                         "float_success", "png_success")}
    methods["advimage_bp_smart"]["ms_per_image"] = 1000 * (t_bp + t_q) / n
    methods["advimage_bp_round"] = {
        "median_float_distortion": base["median_float_distortion"], "float_success": base["float_success"],
        "png_success": base["rounded_png_success"], "ms_per_image": 1000 * t_bp / n,
    }
    # (2) peers on the same images and budget
    for peer in [s for s in args.peers.split(",") if s]:
        try:
            outs, secs = [], 0.0
            for i in range(0, n, args.batch_size):
                adv, dt = run_peer(peer, model, x[i:i + args.batch_size], y[i:i + args.batch_size], args.steps)
                outs.append(adv)
                secs += dt
        except ImportError as exc:
            methods[peer] = {"error": f"not installed: {exc}"}
            continue
        adv = torch.cat(outs)
        fooled = model.predict(adv) != y
        d = distortion(adv, x)
        methods[peer] = {
            "median_float_distortion": float(d[fooled].median()) if fooled.any() else None,
            "float_success": float(fooled.float().mean()),
            "png_success": float((model.predict(png_roundtrip(adv)) != y).float().mean()),
            "ms_per_image": 1000 * secs / n,
        }
    report = {
        "command": "python benchmarks/bench_core.py " + " ".join(args.images) + f" --limit {args.limit} "
                   f"--steps {args.steps} --batch-size {args.batch_size} --passes {args.passes} --peers '{args.peers}'",
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "model": args.model, "images": n, "steps": args.steps, "batch_size": args.batch_size,
        "bp_seconds": t_bp, "forward_backward_seconds": t_fb, "quantize_seconds": t_q,
        "bp_over_forward_backward": t_bp / t_fb, "methods": methods, "passes": passes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{args.model} on {report['device']}, {n} correctly classified images, {args.steps} steps, "
          f"batch {args.batch_size}")
    print(f"BP time / {args.steps} forward+backward passes: {report['bp_over_forward_backward']:.3f} "
          f"({t_bp:.1f} s vs {t_fb:.1f} s); smart quantization {t_q:.1f} s")
    print("\n| method | median float distortion | float success | success as PNG | ms / image |")
    print("|---|---|---|---|---|")
    for name, m in methods.items():
        if "error" in m:
            print(f"| {name} | {m['error']} | | | |")
            continue
        med = m.get("median_float_distortion")
        print(f"| {name} | {med if med is None else f'{med:.3f}'} | {m.get('float_success', float('nan')):.1%} | "
              f"{m['png_success']:.1%} | {m['ms_per_image']:.0f} |")
    if len(passes) > 1:
        ref = passes[next(iter(passes))]
        print(f"\n| passes | BP s | BP / own fwd+bwd | BP time / {next(iter(passes))}'s | float success (own / fp32) "
              "| PNG success (fp32) | median float d | median file d |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        for name, r in passes.items():
            fd = "-" if r["median_file_distortion"] is None else f"{r['median_file_distortion']:.3f}"
            print(f"| {name} | {r['bp_seconds']:.1f} | {r['bp_over_forward_backward']:.3f} | "
                  f"{r['bp_seconds'] / ref['bp_seconds']:.3f} | "
                  f"{r['float_success']:.1%} / {r['float_success_fp32']:.1%} | "
                  f"{r['png_success']:.1%} | {r['median_float_distortion']:.3f} | {fd} |")
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
