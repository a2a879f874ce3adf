"""Thesis Appendix A, Tables 1-2: fooling a no-reference image-quality regressor, spatial vs
DCT-domain quantization, judged after a JPEG 90 re-compression.

The regressor is ``brisque`` (quality = 100 − BRISQUE, higher is better, standing in for App. A's
KonCept network, whose weights are not available offline). For each target s_a, one engine call
per batch (:func:`advimage.engine.run_batch`, native size, :class:`~advimage.criteria.ScoreBelow`):
PGD₂ best effort (binary search over ``runs`` radii, thesis "7 iterations with different budgets")
followed by two quantizers applied to the same attack output:

* spatial (§7.2 ``smart``) to PNG. P_PNG: the re-read PNG scores below s_a. P_JPEG: the PNG's
  pixels re-compressed by Pillow at quality 90 (4:4:4, as ImageMagick ``convert -quality 90``
  does at quality ≥ 90), decoded and re-scored;
* DCT (§7.3 ``jpeg``, quality 90) to JPEG coefficients. P_file: the JPEG file itself scores below
  s_a (Table 2's P_PNG: the image submitted); P_JPEG: that file decoded and re-compressed at 90
  once more (the jury's ``convert -quality 90``), re-scored.

Differences from App. A's DCT method: the coefficients are kept within ``df`` = 1 of the attack's
(floor or ceil of X_a, eq. 7.8) and λ comes from the grid of eqs. 7.24-7.25, where the appendix
clips Q to ±1 quantization step around P with its own λ; the attack starts from the original
(both quantizers share one attack), not from its JPEG. Originals already below s_a count as
successes at distortion 0 (their "file" is the original, re-compressed for P_JPEG).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import codec
from ..data import discover
from ..engine import Row, Settings, run_batch
from .registry import experiment
from .stored import ExperimentRun

TARGETS = (30.0, 50.0)
METHODS = {"smart": "spatial", "jpeg": "dct"}


@torch.no_grad()
def _score(model, x_u8: torch.Tensor) -> float:
    return float(model(x_u8[None].float().to(model.device)).reshape(-1)[0])


def _jpeg90(x_u8: torch.Tensor, quality: int) -> torch.Tensor:
    return codec.decode(codec.encode_jpeg(x_u8.cpu(), quality), ".jpg")


def image_record(model, row: Row, x0_u8: torch.Tensor, s_a: float, quality: int) -> dict:
    """One image × target × method: scores of the file and after one more JPEG at ``quality``."""
    if row.status == "error":
        return {"file": row.file, "method": METHODS[row.quantizer], "target": s_a, "error": row.error}
    x_file = x0_u8 if row.data is None else codec.decode(row.data, row.suffix)
    recompressed = _jpeg90(x_file, quality)
    score_jpeg = _score(model, recompressed)
    return {
        "file": row.file, "method": METHODS[row.quantizer], "target": s_a, "status": row.status,
        "original_score": row.original_score, "score_file": row.score, "score_jpeg": score_jpeg,
        "success_file": row.status in ("fooled", "misclassified"), "success_jpeg": score_jpeg < s_a,
        "distortion": row.distortion, "attack_success": row.attack_success,
        "attack_distortion": row.attack_distortion, "compression_distortion": row.compression_distortion,
        "gradients": row.gradients, "width": row.width, "height": row.height, "seconds": row.seconds,
    }


def run(images: list[str], out: Path, *, regressor: str = "brisque", targets: tuple[float, ...] = TARGETS,
        attack: str = "pgd", steps: int = 50, runs: int = 7, quality: int = 90, df: float = 1,
        limit: int | None = 50, batch_size: int = 4, device: str | None = None, progress: bool = True,
        seed: int = 0) -> dict:
    """Run the experiment: the records in ``out``'s result store (``results.sqlite``, committed per
    batch) and, exported from it, ``out/rows.csv``, ``out/summary.json`` and ``out/table.md``
    (rewritten after every batch, so that an interrupted run leaves its table so far)."""
    from ..images import read_image
    from ..models.regressors import load_regressor
    from ..progress import progress_bar

    model = load_regressor(regressor, device=device)
    items = discover(images)[:limit] if limit else discover(images)
    params = {"runs": runs} if attack in ("pgd", "ifgsm", "cw") else {}
    out.mkdir(parents=True, exist_ok=True)
    settings = {s_a: Settings(attack=attack, steps=steps, quantizers=tuple(METHODS), df=df, quality=quality,
                              target_score=s_a, seed=seed, attack_params=params) for s_a in targets}
    meta = dict(regressor=regressor, attack=attack, steps=steps, runs=runs, quality=quality, df=df, seed=seed)
    run_settings = dict(meta, experiment="app-a", targets=list(targets), limit=limit)
    with ExperimentRun(out, run_settings, lambda r: _columns(r, regressor, attack)) as stored, \
            progress_bar(progress) as bar:
        task = bar.add_task("app-a", total=len(items), status="")
        for i in range(0, len(items), batch_size):  # every target per batch: a partial run covers all
            batch = items[i:i + batch_size]
            records: list[dict] = []
            for s_a in targets:
                for r in run_batch(model, batch, settings[s_a]):
                    x0 = read_image(Path(r.file)) if r.status != "error" else None
                    records.append(image_record(model, r, x0, s_a, quality))
            stored.commit(records)
            summary = _write(out, stored.records(), targets, dict(meta, images=min(len(items), i + len(batch))))
            bar.update(task, advance=len(batch), status=" ".join(
                f"{k} {v['p_file']:.0f}%/{v['p_jpeg']:.0f}%" for k, v in summary["rows"].items()))
        return _write(out, stored.records(), targets, dict(meta, images=len(items)))


def _columns(r: Mapping[str, Any], regressor: str, attack: str) -> dict:
    """A record's common store columns (quantizer ``<method>@<target>``: spatial@30, dct@50, ...)."""
    return dict(model=regressor, attack=attack, quantizer=f"{r['method']}@{r['target']:g}", image=r["file"],
                distortion=r.get("distortion"), success=r.get("success_file"), gradients=r.get("gradients"),
                seconds=r.get("seconds"), error=r.get("error"))


def _write(out: Path, records: list[dict], targets: tuple[float, ...], meta: dict) -> dict:
    """(Re)write rows.csv, summary.json and table.md from the records so far (as stored)."""
    summary = summarize(records, targets)
    summary.update(meta)
    fields = sorted({k for r in records for k in r})
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def summarize(records: list[dict], targets: tuple[float, ...] = TARGETS) -> dict:
    """Per target and method: P_file, P_JPEG (%), distortion (mean and median over files that
    succeed), mean score of the files and after re-compression."""
    out: dict = {"errors": sum("error" in r for r in records), "rows": {}}
    for s_a in targets:
        for m in METHODS.values():
            rs = [r for r in records if r["target"] == s_a and r["method"] == m and "error" not in r]
            n = len(rs)
            ok = [r for r in rs if r["success_file"]]
            d = [r["distortion"] for r in ok if r["distortion"] is not None]
            comp = [r["compression_distortion"] for r in rs if r.get("compression_distortion") is not None]
            out["rows"][f"{m}@{s_a:g}"] = {
                "method": m, "target": s_a, "n": n,
                "already": sum(r["status"] == "misclassified" for r in rs),
                "p_file": 100 * len(ok) / max(1, n),
                "p_jpeg": 100 * sum(r["success_jpeg"] for r in rs) / max(1, n),
                "distortion_mean": statistics.fmean(d) if d else None,
                "distortion_median": statistics.median(d) if d else None,
                "jpeg_alone_distortion_mean": statistics.fmean(comp) if comp else None,
                "score_original_mean": statistics.fmean(r["original_score"] for r in rs) if rs else None,
                "score_file_mean": statistics.fmean(r["score_file"] for r in rs if r["score_file"] is not None)
                if rs else None,
                "score_jpeg_mean": statistics.fmean(r["score_jpeg"] for r in rs) if rs else None,
            }
    return out


THESIS = {("spatial", 30.0): (99.0, 0.7), ("spatial", 50.0): (100.0, 11.1),
          ("dct", 30.0): (77.5, 63.8), ("dct", 50.0): (96.9, 91.6)}


def markdown(s: dict) -> str:
    fmt = lambda v, f=".2f": "–" if v is None else format(v, f)  # noqa: E731
    lines = [
        f"App. A Tables 1-2 on {s.get('regressor', 'brisque')} (quality = 100 − BRISQUE), {s.get('images', '?')} "
        f"images at native size; {s.get('attack', 'pgd')} best effort, {s.get('steps', '?')} gradients "
        f"({s.get('runs', '?')} radii), JPEG quality {s.get('quality', 90)}",
        "",
        "| method | s_a | P_file (%) | P_JPEG (%) | thesis P_PNG / P_JPEG | mean d (median) | JPEG alone d | "
        "quality: original → file → JPEG | already below |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"].values():
        th = THESIS.get((r["method"], r["target"]))
        lines.append(
            f"| {'spatial → PNG' if r['method'] == 'spatial' else 'DCT → JPEG 90'} | {r['target']:g} | "
            f"{r['p_file']:.1f} | {r['p_jpeg']:.1f} | {f'{th[0]} / {th[1]}' if th else '–'} | "
            f"{fmt(r['distortion_mean'], '.3f')} ({fmt(r['distortion_median'], '.3f')}) | "
            f"{fmt(r['jpeg_alone_distortion_mean'], '.3f')} | {fmt(r['score_original_mean'], '.1f')} → "
            f"{fmt(r['score_file_mean'], '.1f')} → {fmt(r['score_jpeg_mean'], '.1f')} | {r['already']}/{r['n']} |")
    lines += ["", "P_file: the written file (PNG, or the DCT-quantized JPEG) scores below s_a; P_JPEG: after one "
              "more Pillow JPEG at the quality (4:4:4). d: eq. 6.2 on files that succeed."]
    return "\n".join(lines) + "\n"


@experiment("app-a", "App. A Tables 1-2: an image-quality regressor, spatial vs DCT quantization, after JPEG 90")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``app-a`` to ``advimage experiment``'s subparsers."""
    from ..cli_types import df_value, positive_int
    from ..models.regressors import regressor_names

    p = experiment_subparsers.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--regressor", default="brisque", choices=regressor_names(), help="regressor to fool")
    p.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="target scores s_a")
    p.add_argument("--attack", default="pgd", help="gradient attack")
    p.add_argument("--steps", type=positive_int, default=50, help="gradients per image, attack + quantizer")
    p.add_argument("--runs", type=positive_int, default=7, help="radii of the best-effort search (pgd, ifgsm, cw)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the DCT quantizer and re-compression")
    p.add_argument("--df", type=df_value, default=1.0, help="degree of freedom of the quantizers")
    p.add_argument("--limit", type=positive_int, default=50, help="first N images")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per engine call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--out", default="runs/app-a", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    from ..cli_support import fail

    if not 1 <= args.quality <= 100:
        fail("--quality must be in [1, 100]")
    try:
        summary = run(args.images, Path(args.out), regressor=args.regressor, targets=tuple(args.targets),
                      attack=args.attack, steps=args.steps, runs=args.runs, quality=args.quality, df=args.df,
                      limit=args.limit, batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                      seed=args.seed)
    except ValueError as exc:
        fail(str(exc))
    print(markdown(summary))
    return 0
