"""Why Table 7.2 differs: how much of an adversarial perturbation a JPEG reformer lets through.

The thesis (Table 7.2) reports 4.0% / 42.1% accuracy of EfficientNet-b0 behind a JPEG100 /
JPEG90 reformer on its spatially quantized adversarial PNGs; ours are at 100% / 100%. This
script attacks the first images (EfficientNet-Lite0, model size, BP best-effort + smart
quantization through the engine; the attack's float output is kept too, quantizer ``none``) and
measures, per reformer quality q:

(a) the reformer's own distortion on the clean originals, d(J(x0), x0) (eq. 6.2, pixel units),
    next to the adversarial perturbation's d(x_adv, x0);
(b) how much of the perturbation goes through: with delta = x_adv - x0 and
    Delta = J(x_adv) - J(x0), the retained fraction <Delta, delta> / ||delta||^2 and
    ||Delta|| / ||delta||;
(c) the adversarial loss L (the logit margin of :func:`advimage.losses.adversarial_loss`;
    negative = adversarial) of x0, x_adv, J(x0), J(x_adv), and the first-order prediction
    L(J(x0)) + <grad L(J(x0)), Delta> with its two parts, next to <grad L(J(x0)), delta> (what
    delta would do if it went through whole). Exactly, J(x_adv) = x_adv + n0 + (Delta - delta)
    with n0 = J(x0) - x0 the reformer's own noise on the original, so L(J(x0) + delta) splits
    the change L(J(x_adv)) - L(x_adv) into the reformer's own noise (L(J(x0) + delta) - L(x_adv))
    and what happens to delta (L(J(x_adv)) - L(J(x0) + delta)); the largest change over the
    images is the margin a file would have needed;
(d) accuracy behind reformers that differ in where rounding happens: ``libjpeg`` (the real
    round trip: round the input to 8 bits, Pillow 4:4:4, decode to uint8), ``libjpeg420``
    (the same with Pillow's default 4:2:0 chroma subsampling), ``float``
    (:func:`advimage.defenses.jpeg.jpeg_float`: coefficients of the float pixels quantized, float
    inverse DCT, no rounding or clipping), ``float+round`` (the same, output rounded to 8 bits);
    and behind an 8-bit resize (Pillow bicubic to 7/8 of the side and back, as studies/margin.py);
(e) the same for the attack's floats before quantization (``floats``) as for the PNG files.

With ``--margins 0,2,5`` the whole run is repeated with the quantizer asked for a margin
L_adv <= -kappa (``Settings.margin``), and a table of accuracies per margin is printed.

Usage: python studies/jpeg_reformer_why.py IMAGES [--limit 16] [--steps 50]
       [--qualities 100,95,90] [--margins 0] [--threads 2] [--out studies/out/jpeg_reformer_why.json]
Writes JSON (per image and summary) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import advimage
from advimage import codec
from advimage.data import discover
from advimage.defenses.jpeg import jpeg_compress, jpeg_float
from advimage.distortion import distortion
from advimage.engine import Settings, run_batch
from advimage.images import load_for_model
from advimage.losses import adversarial_loss

REFORMERS = ("libjpeg", "libjpeg420", "float", "float+round")


def pillow_420(x: Tensor, quality: int) -> Tensor:
    """Round to 8 bits, Pillow JPEG with its default chroma subsampling (4:2:0), decode; float."""
    out = []
    for img in x.detach().round().clamp(0, 255).to(torch.uint8):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        out.append(codec.decode(buf.getvalue()))
    return torch.stack(out).float()


def reform(name: str, x: Tensor, quality: int) -> Tensor:
    """Reformer ``name`` at ``quality`` on float pixels (N, 3, H, W) -> float pixels."""
    if name == "libjpeg":
        return jpeg_compress(x, quality)
    if name == "libjpeg420":
        return pillow_420(x, quality)
    if name == "float":
        return jpeg_float(x, quality)
    if name == "float+round":
        return jpeg_float(x, quality, rounded=True)
    raise ValueError(name)


def resize8bit(x: Tensor) -> Tensor:
    """Round to 8 bits, Pillow bicubic to 7/8 of the side and back (studies/margin.py's victim)."""
    out = []
    for img in x.detach().round().clamp(0, 255).to(torch.uint8):
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        w, h = pil.size
        small = pil.resize((w * 7 // 8, h * 7 // 8), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        out.append(torch.from_numpy(np.array(small)).permute(2, 0, 1))
    return torch.stack(out).float()


def loss_and_grad(model, x: Tensor, y: Tensor, grad: bool = False) -> tuple[Tensor, Tensor | None]:
    """L_adv (N,) and, if asked, its gradient w.r.t. the pixels (N, 3, H, W)."""
    x = x.detach().float().clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        loss = adversarial_loss(model(x), y)
    if not grad:
        return loss.detach(), None
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


def dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.double().flatten(1) * b.double().flatten(1)).sum(1)


def make_adversarials(model, items, steps: int, margin: float) -> tuple[Tensor, Tensor, Tensor, Tensor, list]:
    """Engine run at model size: x0 (uint8), labels, the smart-quantized PNGs read back and the
    attack's floats (both x0 where the original is already misclassified), and the rows."""
    x0, ys, png, flt, rows_out = [], [], [], [], []
    settings = Settings(steps=steps, size="model", quantizers=("smart", "none"), margin=margin)
    for s in range(0, len(items), 8):
        batch = items[s:s + 8]
        rows = run_batch(model, batch, settings)
        for k, it in enumerate(batch):
            smart, none = rows[2 * k], rows[2 * k + 1]
            if smart.status == "error":
                continue
            x = load_for_model(it.path, model.config)
            x0.append(x)
            ys.append(int(smart.label))
            png.append(codec.decode(smart.data, ".png").float() if smart.data is not None else x.float())
            flt.append(codec.decode(none.data, ".npy").float() if none.data is not None else x.float())
            rows_out.append(smart)
    return torch.stack(x0), torch.tensor(ys), torch.stack(png), torch.stack(flt), rows_out


def analyse(model, x0u: Tensor, y: Tensor, inputs: dict[str, Tensor], attacked: Tensor,
            qualities: tuple[int, ...]) -> dict:
    """Per-image measurements (a)-(e) for every input kind, reformer and quality."""
    x0 = x0u.float()
    out: dict = {"accuracy": {}, "per_image": {}}
    with torch.no_grad():
        l_x0, _ = loss_and_grad(model, x0, y)
        preds = {"originals": model(x0).argmax(1)}
        for kind, x in inputs.items():
            preds[kind] = model(x).argmax(1)
    l_in = {k: loss_and_grad(model, x, y)[0] for k, x in inputs.items()}
    _, g_x0 = loss_and_grad(model, x0, y, grad=True)
    acc = {k: {"none": float((p == y).float().mean())} for k, p in preds.items()}
    for kind, x in [("originals", x0)] + list(inputs.items()):
        with torch.no_grad():
            acc[kind]["resize8bit"] = float((model(resize8bit(x)).argmax(1) == y).float().mean())
    for q in qualities:
        for r in REFORMERS:
            key = f"{r}@{q}"
            j0 = reform(r, x0, q)
            l_j0, g_j0 = loss_and_grad(model, j0, y, grad=True)
            with torch.no_grad():
                acc["originals"][key] = float((model(j0).argmax(1) == y).float().mean())
            d_j0 = distortion(j0, x0)
            for kind, x in inputs.items():
                jx = reform(r, x, q)
                l_jx, _ = loss_and_grad(model, jx, y)
                l_j0_delta, _ = loss_and_grad(model, j0 + (x - x0), y)
                with torch.no_grad():
                    acc[kind][key] = float((model(jx).argmax(1) == y).float().mean())
                delta, big = x - x0, jx - j0
                nd2 = dot(delta, delta).clamp_min(1e-12)
                rec = {
                    "d_reformer_x0": d_j0, "d_adv": distortion(x, x0), "d_reformed_adv": distortion(jx, x0),
                    "retained": dot(big, delta) / nd2, "norm_ratio": dot(big, big).sqrt() / nd2.sqrt(),
                    "L_x0": l_x0, "L_adv": l_in[kind], "L_J_x0": l_j0, "L_J_adv": l_jx, "L_J_x0_plus_delta": l_j0_delta,
                    "g_Delta": dot(g_j0, big), "g_delta": dot(g_j0, delta), "g0_delta": dot(g_x0, delta),
                }
                rec["first_order"] = rec["L_J_x0"] + rec["g_Delta"]
                out["per_image"][f"{kind}/{key}"] = {k: [float(v) for v in t[attacked]] for k, t in rec.items()}
    out["accuracy"] = acc
    return out


def mean(v: list[float]) -> float:
    return statistics.fmean(v) if v else float("nan")


def median(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


def tables(run: dict, qualities: tuple[int, ...]) -> str:
    """Markdown for one margin: (a)+(b), (c), (d)+(e)."""
    pi, acc = run["per_image"], run["accuracy"]
    lines = [f"margin κ = {run['margin']:g}: {run['n']} images, {run['attacked']} attacked "
             f"({run['fooled']} files verified adversarial); floats = the attack's output before quantization", "",
             "(a), (b): distortions and what the reformer lets through (attacked images; means, retained: median)", "",
             "| input | reformer | q | d(J(x0), x0) | d(x_adv, x0) | d(J(x_adv), x0) | ⟨Δ,δ⟩/‖δ‖² | ‖Δ‖/‖δ‖ |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for kind in ("png", "floats"):
        for q in qualities:
            for r in REFORMERS:
                p = pi[f"{kind}/{r}@{q}"]
                lines.append(f"| {kind} | {r} | {q} | {mean(p['d_reformer_x0']):.3f} | {mean(p['d_adv']):.3f} | "
                             f"{mean(p['d_reformed_adv']):.3f} | {median(p['retained']):.2f} | "
                             f"{median(p['norm_ratio']):.2f} |")
    lines += ["", "(c): adversarial loss L (logit margin, < 0 = adversarial), means over attacked images; "
              "g = ∇L(J(x0)), g0 = ∇L(x0)", "",
              "| input | reformer | q | L(x0) | L(x_adv) | ⟨g0,δ⟩ | L(J(x0)) | L(J(x_adv)) | "
              "L(J(x0)) + ⟨g,Δ⟩ | ⟨g,Δ⟩ | ⟨g,δ⟩ | L(J(x0) + δ) | max L(J(x_adv)) − L(x_adv) | "
              "J(x_adv) adversarial |", "|---|---|--:|" + "--:|" * 11]
    for kind in ("png", "floats"):
        for q in qualities:
            for r in REFORMERS:
                p = pi[f"{kind}/{r}@{q}"]
                adv = sum(v < 0 for v in p["L_J_adv"])
                shift = max(a - b for a, b in zip(p["L_J_adv"], p["L_adv"]))
                lines.append(f"| {kind} | {r} | {q} | {mean(p['L_x0']):.2f} | {mean(p['L_adv']):.2f} | "
                             f"{mean(p['g0_delta']):.2f} | {mean(p['L_J_x0']):.2f} | {mean(p['L_J_adv']):.2f} | "
                             f"{mean(p['first_order']):.2f} | {mean(p['g_Delta']):.2f} | {mean(p['g_delta']):.2f} | "
                             f"{mean(p['L_J_x0_plus_delta']):.2f} | {shift:.2f} | {adv}/{len(p['L_J_adv'])} |")
    cols = [f"{r}@{q}" for q in qualities for r in REFORMERS] + ["resize8bit"]
    lines += ["", "(d), (e): accuracy (%) behind each reformer, all images (Table 7.2 style)", "",
              "| input | none | " + " | ".join(cols) + " |", "|---|--:|" + "--:|" * len(cols)]
    for kind in ("originals", "png", "floats"):
        a = acc[kind]
        lines.append(f"| {kind} | {100 * a['none']:.1f} | " + " | ".join(f"{100 * a[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def margin_table(runs: list[dict], qualities: tuple[int, ...]) -> str:
    cols = [f"libjpeg@{q}" for q in qualities] + [f"float@{q}" for q in qualities] + ["resize8bit"]
    lines = ["Accuracy (%) of the PNG files per margin κ (all images):", "",
             "| κ | files adversarial | mean d (attacked) | none | " + " | ".join(cols) + " |",
             "|--:|--:|--:|--:|" + "--:|" * len(cols)]
    for run in runs:
        a = run["accuracy"]["png"]
        d = mean(run["per_image"][f"png/libjpeg@{qualities[0]}"]["d_adv"])
        lines.append(f"| {run['margin']:g} | {run['fooled']}/{run['attacked']} | {d:.3f} | {100 * a['none']:.1f} | "
                     + " | ".join(f"{100 * a[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--qualities", default="100,95,90")
    p.add_argument("--margins", default="0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="studies/out/jpeg_reformer_why.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    qualities = tuple(int(q) for q in args.qualities.split(","))
    model = advimage.load_model("efficientnet_lite0", device="cpu")
    items = discover(args.images)[:args.limit]
    runs = []
    for kappa in (float(m) for m in args.margins.split(",")):
        t0 = time.perf_counter()
        x0, y, png, flt, rows = make_adversarials(model, items, args.steps, kappa)
        attacked = torch.tensor([r.status in ("fooled", "failed") for r in rows])
        t_attack = time.perf_counter() - t0
        run = analyse(model, x0, y, {"png": png, "floats": flt}, attacked, qualities)
        run.update(margin=kappa, n=len(rows), attacked=int(attacked.sum()),
                   fooled=sum(r.status == "fooled" for r in rows),
                   images=[Path(r.file).name for r, a in zip(rows, attacked) if a],
                   seconds_attack=t_attack, seconds_analysis=time.perf_counter() - t0 - t_attack)
        runs.append(run)
        print(f"margin {kappa:g}: attack {t_attack:.0f} s, analysis {run['seconds_analysis']:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": "python studies/jpeg_reformer_why.py " + " ".join(sys.argv[1:]),
        "model": "efficientnet_lite0", "attack": "bp", "steps": args.steps, "qualities": list(qualities),
        "reformers": list(REFORMERS), "runs": runs}, indent=1))
    print(tables(runs[0], qualities))
    if len(runs) > 1:
        print(margin_table(runs, qualities))


if __name__ == "__main__":
    main()
