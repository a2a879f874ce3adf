"""Fig. 9.2 (thesis §9.2, Scenario A): adversarial distortion against input size.

For each model with input size ℓ: the base images (largest centre square → 600×600, Pillow
bilinear, see :mod:`.scaling`) are downscaled to ℓ×ℓ with Pillow's bilinear filter (8-bit), and
BP best-effort attacks them at ℓ (floats: Ch. 9 does not quantize). Per model:

- η(n): the model's accuracy on the ℓ×ℓ images, n = 3ℓ²;
- κ(n) = √(−2 log(1 − η)) + √(π/2) (eq. 9.1);
- σ_A(n): the mean, and the median, of the distortion (RMSE, eq. 6.2) over successful attacks of
  correctly classified images;
- log₁₀(σ_A/κ) against log₁₀ n, with a least-squares slope (the thesis expects −1/2 for
  ℓ ∈ [224, 416] in three families, and says EfficientNet-Lite does not follow).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from ..cli_support import fail
from ..data import check_labels, discover
from .registry import experiment
from .scaling import prepare_bases


def kappa(eta: float) -> float:
    """Eq. 9.1: κ(n) = √(−2 log(1 − η)) + √(π/2); η the accuracy in [0, 1)."""
    if not 0 <= eta < 1:
        raise ValueError(f"accuracy must be in [0, 1), got {eta}")
    return math.sqrt(-2 * math.log(1 - eta)) + math.sqrt(math.pi / 2)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs (nan with fewer than 2 distinct xs)."""
    if len(set(xs)) < 2:
        return math.nan
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def model_point(model_name: str, bases: list, *, steps: int, seed: int, batch_size: int, device: str | None,
                bar: Any = None) -> dict[str, Any]:
    """One point of Fig. 9.2 for a model (see the module docstring)."""
    from PIL import Image

    from ..attacks import spec as attack_spec
    from ..criteria import Misclassification
    from ..images import pil_to_tensor, read_pil
    from ..models import load_model

    model = load_model(model_name, device=device)
    size = model.config.input_size
    x = torch.stack([pil_to_tensor(read_pil(b.path).resize((size, size), Image.Resampling.BILINEAR))
                     for b in bases]).float()
    y = torch.tensor([b.label for b in bases])
    pred = model.predict(x.to(model.device)).cpu()
    correct = (pred == y)
    task = bar.add_task(f"Fig. 9.2 · {model_name} ({size}px)", total=int(correct.sum()), status="") if bar else None
    dists, successes = [], 0
    idx = correct.nonzero().flatten()
    torch.manual_seed(seed)
    for s in range(0, len(idx), batch_size):
        j = idx[s:s + batch_size]
        xs, ys = x[j].to(model.device), y[j].to(model.device)
        res = attack_spec("bp").run(model, xs, Misclassification(ys), steps=steps)
        ok = res.success.cpu()
        successes += int(ok.sum())
        dists += res.distortion.cpu()[ok].tolist()
        if bar:
            bar.update(task, advance=len(j))
    eta = float(correct.float().mean())
    k = kappa(min(eta, 1 - 1e-9))
    dists.sort()
    mean = sum(dists) / len(dists) if dists else math.nan
    median = dists[len(dists) // 2] if dists else math.nan
    n = 3 * size * size
    return {"model": model_name, "size": size, "n": n, "images": len(bases), "eta": eta, "kappa": k,
            "attacked": int(correct.sum()), "successes": successes, "sigma_mean": mean, "sigma_median": median,
            "log10_n": math.log10(n), "log10_ratio_mean": math.log10(mean / k) if dists else math.nan,
            "log10_ratio_median": math.log10(median / k) if dists else math.nan, "steps": steps}


def run(images: list[str], out: Path, models: list[str], *, steps: int = 50, limit: int | None = 100, seed: int = 0,
        batch_size: int = 8, device: str | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Every model's point (kept in ``out/points/<model>.json``; ``resume`` reuses them), then the
    CSV, the plot, the Markdown table and the slopes."""
    from ..models import load_model
    from ..progress import progress_bar

    items = discover(images)
    items = items[:limit] if limit else items
    for m in models:
        check_labels(items, load_model(m, device="cpu").config.num_classes, m)
    bases = prepare_bases(items, out / "bases")
    points_dir = out / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    points = []
    with progress_bar(progress) as bar:
        for m in models:
            path = points_dir / f"{m.replace(':', '_').replace('/', '_')}.json"
            if resume and path.is_file():
                p = json.loads(path.read_text())
                if (p.get("steps"), p.get("images")) == (steps, len(bases)):
                    points.append(p)
                    continue
            p = model_point(m, bases, steps=steps, seed=seed, batch_size=batch_size, device=device, bar=bar)
            path.write_text(json.dumps(p, indent=2))
            points.append(p)
    summary = {"points": points, "steps": steps, "images": len(bases),
               "slope_mean": slope([p["log10_n"] for p in points], [p["log10_ratio_mean"] for p in points]),
               "slope_median": slope([p["log10_n"] for p in points], [p["log10_ratio_median"] for p in points])}
    (out / "fig92.json").write_text(json.dumps(summary, indent=2))
    _write_csv(points, out / "fig92.csv")
    _plot(summary, out / "fig92.png")
    (out / "fig92.md").write_text(markdown(summary))
    return summary


def _write_csv(points: list[dict], path: Path) -> None:
    import csv

    keys = ["model", "size", "n", "eta", "kappa", "attacked", "successes", "sigma_mean", "sigma_median",
            "log10_n", "log10_ratio_mean", "log10_ratio_median"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(points)


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = summary["points"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["log10_n"] for p in pts]
    for key, marker, name in (("log10_ratio_mean", "o", "mean"), ("log10_ratio_median", "s", "median")):
        ax.plot(xs, [p[key] for p in pts], marker, label=f"σ_A {name} (slope {summary['slope_' + name]:.2f})")
    for p in pts:
        ax.annotate(f"{p['model']} ({p['size']})", (p["log10_n"], p["log10_ratio_mean"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if xs:
        x0 = min(xs)
        y0 = pts[xs.index(x0)]["log10_ratio_mean"]
        ax.plot([x0, max(xs)], [y0, y0 - 0.5 * (max(xs) - x0)], "k--", lw=0.8, label="slope −1/2 (thesis)")
    ax.set_xlabel("log10 n  (n = 3ℓ²)")
    ax.set_ylabel("log10 σ_A(n) / κ(n)")
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 9.2: BP {summary['steps']} gradients, {summary['images']} images (floats)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    lines = [f"Fig. 9.2 points: BP best-effort {summary['steps']} gradients (floats), {summary['images']} base "
             "images downscaled to each model's ℓ (Pillow bilinear).", "",
             "| model | ℓ | η(n) (%) | κ(n) | successes / attacked | σ_A mean | σ_A median | log10 n | "
             "log10 σ_A/κ (mean) |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for p in summary["points"]:
        lines.append(f"| {p['model']} | {p['size']} | {100 * p['eta']:.1f} | {p['kappa']:.3f} | "
                     f"{p['successes']}/{p['attacked']} | {p['sigma_mean']:.4f} | {p['sigma_median']:.4f} | "
                     f"{p['log10_n']:.3f} | {p['log10_ratio_mean']:.3f} |")
    lines += ["", f"Fitted slope: {summary['slope_mean']:.2f} (mean), {summary['slope_median']:.2f} (median); "
              "thesis: −1/2 for ℓ ∈ [224, 416] in three families, EfficientNet-Lite not following."]
    return "\n".join(lines) + "\n"


@experiment("scaling-fig92", "Fig. 9.2: adversarial distortion against input size (Scenario A)")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``scaling-fig92`` to ``advimage experiment``'s subparsers."""
    from ..cli_types import positive_int

    p = experiment_subparsers.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)
    p.add_argument("images", nargs="+", help="image set (folder with labels.csv, ImageFolder, ...)")
    p.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2",
                   help="comma-separated models (any timm:/torchvision: model with local weights too)")
    p.add_argument("--steps", type=positive_int, default=50, help="BP gradients per image")
    p.add_argument("--limit", type=positive_int, default=100, help="first N images")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per attack call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--out", default="runs/scaling-fig92", help="output folder")
    p.add_argument("--resume", action="store_true", help="reuse the points of models already done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(experiment_main=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..models import UnknownModelError
    from ..specs import check

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        for m in models:
            check(m)
    except UnknownModelError as exc:
        fail(str(exc))
    summary = run(args.images, Path(args.out), models, steps=args.steps, limit=args.limit, seed=args.seed,
                  batch_size=args.batch_size, device=args.device, resume=args.resume, progress=not args.quiet)
    print(markdown(summary))
    return 0
