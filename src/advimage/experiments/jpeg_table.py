"""Table 7.1, JPEG columns: plain compression vs PGD2 BPDA vs BP + JPEG smart quantization.

Protocol (thesis §7.4.1), for each quality factor q and each image x0:

* **plain**: x0 compressed by Pillow at q (4:4:4) and written as ``plain/<stem>.jpg``;
* **ours**: if the plain JPEG already fools the model, that file is the result; otherwise the
  attack (BP, best-effort) runs on the *decoded plain JPEG*, :func:`quantize_jpeg` turns its
  output into integer DCT coefficients at q, written losslessly as ``ours/<stem>.jpg``;
* **BPDA** (baseline): PGD2 best-effort through ``JpegDefense(model, q, backward="identity")``
  from the spatial x0, its output rounded and written as a plain Pillow JPEG at q,
  ``bpda/<stem>.jpg`` (where the plain JPEG already fools the model, the plain file).

Every file is decoded again with Pillow and re-classified: the file is the truth. Distortion
(eq. 6.2) is always measured against the spatial original x0. Accuracies are over all images,
success rates over the images whose spatial original is correctly classified.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cli_support import fail
from ..codec import encode_jpeg, write_atomic
from ..data import ImageItem, check_labels, discover
from ..defenses.jpeg import JpegDefense
from ..distortion import distortion
from ..engine import Settings, run_batch
from ..images import ImageReadError, load_for_model
from ..jpeg.io import decode, write_pixels
from ..models import load_model
from .options import experiment_parser
from .registry import experiment
from .stored import ExperimentRun

KINDS = ("plain", "ours", "bpda")


@dataclass
class Row:
    """One image at one quality factor; distortions against the spatial original."""

    image: str
    label: int
    quality: int
    correct: bool            # the spatial original is classified correctly
    plain_success: bool      # the plain JPEG file fools the model
    plain_distortion: float
    attacked: bool           # the plain JPEG did not fool the model: attack + quantization ran
    float_success: bool      # the attack's float output fooled the model (True if not attacked)
    ours_success: bool       # the quantized .jpg, decoded by Pillow, fools the model
    ours_distortion: float
    ours_lam: float
    ours_gradients: int      # attack + quantization
    ours_forwards: int
    ours_seconds: float
    bpda_success: bool
    bpda_distortion: float
    bpda_gradients: int
    bpda_seconds: float


@dataclass
class JpegAdversarials:
    """What :func:`jpeg_adversarials` wrote: one file per image, and the passes it took (N,)."""

    paths: list[Path]
    attacked: Tensor
    float_success: Tensor
    lam: Tensor
    gradients: Tensor
    forwards: Tensor


def read_files(paths: list[Path], device: torch.device | str) -> Tensor:
    """Decode JPEG files with Pillow -> float pixels (N, 3, H, W) on ``device``."""
    return torch.stack([decode(p) for p in paths]).to(device).float()


def plain_jpegs(x0: Tensor, quality: int, paths: list[Path]) -> list[Path]:
    """Write each uint8 original (N, 3, H, W) as a plain Pillow JPEG (4:4:4) at ``quality``."""
    for img, p in zip(x0, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        write_pixels(p, img.cpu(), quality)
    return paths


def jpeg_adversarials(model: nn.Module, items: list[ImageItem], x0: Tensor, quality: int, paths: list[Path], *,
                      attack: str = "bp", steps: int = 100, df: float = 1, n: int = 10) -> JpegAdversarials:
    """The §7.4.1 JPEG protocol through the engine; writes one .jpg per image at ``paths``.

    items: the files (with their labels); x0: their uint8 originals (N, 3, H, W) at model size.
    The engine attacks the decoded plain JPEG and :func:`quantize_jpeg` keeps the plain JPEG where
    it already fools the model (λ = 0). Every result is written, verified or not (the table
    reports success rates); an original already misclassified gets its plain JPEG.
    """
    settings = Settings(attack=attack, steps=steps, quantizers=("jpeg",), df=df, quality=quality, size="model",
                        margin=0.0, quantizer_steps=n)
    rows = run_batch(model, items, settings)
    N = len(rows)
    attacked = torch.zeros(N, dtype=torch.bool)
    float_success = torch.ones(N, dtype=torch.bool)
    lam = torch.zeros(N)
    gradients = torch.zeros(N, dtype=torch.long)
    forwards = torch.ones(N, dtype=torch.long)  # the plain-JPEG check
    for i, (r, x, p) in enumerate(zip(rows, x0, paths)):
        write_atomic(p, r.data if r.data is not None else encode_jpeg(x.cpu(), quality))
        if r.data is not None:
            attacked[i] = (r.lam or 0.0) != 0.0  # λ = 0: the plain JPEG was kept
            float_success[i] = bool(r.attack_success) if attacked[i] else True
            lam[i] = r.lam if r.lam is not None else float("nan")
            gradients[i], forwards[i] = r.gradients, r.forwards
    return JpegAdversarials(paths=list(paths), attacked=attacked, float_success=float_success, lam=lam,
                            gradients=gradients, forwards=forwards)


def bpda_jpegs(model: nn.Module, items: list[ImageItem], x0: Tensor, quality: int, paths: list[Path], *,
               attack: str = "pgd", steps: int = 100) -> Tensor:
    """Baseline through the engine: ``attack`` through JpegDefense(quality, backward="identity")
    from x0, rounded and saved as a plain Pillow JPEG (quantizer ``jpeg-pixels``); verified on the
    undefended model. Images whose plain JPEG already fools the model keep it. Returns gradients (N,)."""
    settings = Settings(attack=attack, steps=steps, quantizers=("jpeg-pixels",), quality=quality, size="model",
                        margin=0.0)
    defended = JpegDefense(model, quality=quality, backward="identity")
    rows = run_batch(model, items, settings, attacked=defended)
    for r, x, p in zip(rows, x0, paths):
        write_atomic(p, r.data if r.data is not None else encode_jpeg(x.cpu(), quality))
    return torch.tensor([r.gradients for r in rows], dtype=torch.long)


def load_batch(items, config) -> list[tuple]:
    batch = []
    for item in items:
        try:
            batch.append((item, load_for_model(item.path, config)))
        except ImageReadError as exc:
            print(f"skipped: {exc}")
    return batch


def run(images: list[str], out: Path, model_name: str = "efficientnet_lite0", attack: str = "bp", steps: int = 100,
        qualities: tuple[int, ...] = (90, 75), df: float = 1, limit: int | None = 24, batch_size: int = 8,
        device: str | None = None, baseline: str = "pgd", baseline_steps: int | None = None, n: int = 10,
        progress: bool = True) -> dict:
    """Run the experiment; write ``out/q<Q>/{plain,ours,bpda}/<stem>.jpg``, the rows in ``out``'s
    result store (``results.sqlite``, committed per batch and quality) and, exported from it,
    ``rows.json``, ``summary.json`` and ``table.md``. Returns the summary (see :func:`summarize`).

    baseline: the attack run through the BPDA defense (default PGD2), with ``baseline_steps``
    gradients (default ``steps``); ``baseline=""`` skips it.
    """
    from rich.progress import Progress

    out = Path(out)
    model = load_model(model_name, device=device)
    items = discover(images)
    items = items[:limit] if limit else items
    check_labels(items, model.config.num_classes, model_name)
    out.mkdir(parents=True, exist_ok=True)
    baseline_steps = baseline_steps or steps
    meta = dict(model=model_name, attack=attack, steps=steps, qualities=list(qualities), df=df, baseline=baseline,
                baseline_steps=baseline_steps, n=n)
    stored = ExperimentRun(out, dict(meta, experiment="jpeg-table", limit=limit),
                           lambda r: _columns(r, model_name, attack))
    with stored, Progress(disable=not progress) as bar:
        task = bar.add_task("jpeg-table", total=len(items) * len(qualities))
        for b in range(0, len(items), batch_size):
            batch = load_batch(items[b:b + batch_size], model.config)
            if not batch:
                continue
            stems = [it.stem for it, _ in batch]
            x0 = torch.stack([t for _, t in batch]).to(model.device)
            y = torch.tensor([it.label if it.label is not None else -1 for it, _ in batch], device=model.device)
            if bool((y < 0).any()):  # unlabelled files: the model's prediction on x0 is the label
                y = torch.where(y < 0, model.predict(x0.float()), y)
            correct = model.predict(x0.float()) == y
            for q in qualities:
                rows: list[Row] = []
                folder = out / f"q{q}"
                plain = plain_jpegs(x0, q, [folder / "plain" / f"{s}.jpg" for s in stems])
                t0 = time.perf_counter()
                labelled = [ImageItem(it.path, int(y[j])) for j, (it, _) in enumerate(batch)]
                adv = jpeg_adversarials(model, labelled, x0, q, [folder / "ours" / f"{s}.jpg" for s in stems],
                                        attack=attack, steps=steps, df=df, n=n)
                t_ours = (time.perf_counter() - t0) / len(batch)
                t0 = time.perf_counter()
                bpda_paths = [folder / "bpda" / f"{s}.jpg" for s in stems]
                if baseline:
                    g_bpda = bpda_jpegs(model, labelled, x0, q, bpda_paths, attack=baseline, steps=baseline_steps)
                t_bpda = (time.perf_counter() - t0) / len(batch)
                verdict = {}
                for kind, paths in (("plain", plain), ("ours", adv.paths), ("bpda", bpda_paths)):
                    if kind == "bpda" and not baseline:
                        verdict[kind] = (torch.zeros_like(correct), torch.full(correct.shape, float("nan")))
                        continue
                    xf = read_files(paths, model.device)
                    verdict[kind] = (model.predict(xf) != y, distortion(xf, x0))
                for j in range(len(stems)):
                    rows.append(Row(
                        image=batch[j][0].path.name, label=int(y[j]), quality=int(q), correct=bool(correct[j]),
                        plain_success=bool(verdict["plain"][0][j]), plain_distortion=float(verdict["plain"][1][j]),
                        attacked=bool(adv.attacked[j]), float_success=bool(adv.float_success[j]),
                        ours_success=bool(verdict["ours"][0][j]), ours_distortion=float(verdict["ours"][1][j]),
                        ours_lam=float(adv.lam[j]), ours_gradients=int(adv.gradients[j]),
                        ours_forwards=int(adv.forwards[j]), ours_seconds=t_ours,
                        bpda_success=bool(verdict["bpda"][0][j]), bpda_distortion=float(verdict["bpda"][1][j]),
                        bpda_gradients=int(g_bpda[j]) if baseline else 0, bpda_seconds=t_bpda,
                    ))
                stored.commit(asdict(r) for r in rows)
                bar.update(task, advance=len(batch))
            _write(out, stored.records(), model_name, attack, steps, qualities, df, baseline,
                   baseline_steps)  # partial results
        return _write(out, stored.records(), model_name, attack, steps, qualities, df, baseline, baseline_steps)


def _columns(r: Mapping[str, Any], model_name: str, attack: str) -> dict:
    """A row's common store columns: the quantized JPEG file's verdict (quantizer ``jpeg:<Q>``)."""
    return dict(model=model_name, attack=attack, quantizer=f"jpeg:{r['quality']}", image=r["image"],
                label=r["label"], distortion=r["ours_distortion"], success=r["ours_success"],
                gradients=r["ours_gradients"], seconds=r["ours_seconds"])


def _write(out: Path, records: list[dict], model_name: str, attack: str, steps: int, qualities, df: float,
           baseline: str, baseline_steps: int) -> dict:
    """summary.json, table.md and rows.json from the run's records as stored."""
    rows = [Row(**r) for r in records]
    summary = summarize(rows, qualities)
    summary.update(model=model_name, attack=attack, steps=steps, df=df, baseline=baseline,
                   baseline_steps=baseline_steps, images=len({r.image for r in rows}))
    (out / "rows.json").write_text(json.dumps(records, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(rows: list[Row], qualities=None) -> dict:
    """Per quality: for each kind (plain, ours, bpda) the accuracy over all images, the success
    rate over correctly classified originals and the mean distortion over all images; plus the
    ratio ours / plain of the summed distortions over correct originals that ours fooled."""
    qualities = qualities or sorted({r.quality for r in rows}, reverse=True)
    out: dict = {"per_quality": {}}
    for q in qualities:
        rq = [r for r in rows if r.quality == q]
        if not rq:
            continue
        correct = [r for r in rq if r.correct]
        s: dict = {"n": len(rq), "n_correct": len(correct), "accuracy_clean": len(correct) / len(rq),
                   "attacked": sum(r.attacked for r in rq)}
        for kind in KINDS:
            s[f"{kind}_accuracy"] = sum(not getattr(r, f"{kind}_success") for r in rq) / len(rq)
            s[f"{kind}_success"] = sum(getattr(r, f"{kind}_success") for r in correct) / max(1, len(correct))
            s[f"{kind}_mean_distortion"] = _mean([getattr(r, f"{kind}_distortion") for r in rq])
        for kind in ("ours", "bpda"):
            both = [r for r in correct if getattr(r, f"{kind}_success")]
            s[f"{kind}_over_plain_distortion"] = (
                sum(getattr(r, f"{kind}_distortion") for r in both) / sum(r.plain_distortion for r in both)
                if both else float("nan"))
        s["float_success"] = sum(r.float_success for r in correct) / max(1, len(correct))
        att = [r for r in rq if r.attacked]
        s["ours_mean_gradients"] = _mean([r.ours_gradients for r in att])
        s["ours_mean_forwards"] = _mean([r.ours_forwards for r in att])
        s["ours_seconds_per_image"] = _mean([r.ours_seconds for r in rq])
        s["bpda_seconds_per_image"] = _mean([r.bpda_seconds for r in rq])
        out["per_quality"][str(q)] = s
    return out


def markdown(s: dict) -> str:
    """Table 7.1's JPEG columns (accuracy %, mean distortion) and a detail table per quality."""
    pq = s["per_quality"]
    qs = list(pq)
    anyq = pq[qs[0]] if qs else {"n_correct": 0, "accuracy_clean": float("nan")}
    head = (f"{s['model']}, {s['images']} images (clean accuracy {100 * anyq['accuracy_clean']:.1f}%, "
            f"{anyq['n_correct']} correctly classified); ours = {s['attack']} best-effort {s['steps']} gradients + "
            f"JPEG smart quantization (df={s['df']:g})")
    if s.get("baseline"):
        head += f"; BPDA = {s['baseline']} best-effort {s['baseline_steps']} gradients through JPEG (identity backward)"
    lines = [head, "", "| attack | " + " | ".join(f"JPEG{q} acc. (%) | JPEG{q} dist." for q in qs) + " |",
             "|---|" + "---|---|" * len(qs)]
    names = {"plain": "None (plain JPEG)", "bpda": f"{s.get('baseline') or 'PGD'}2 BPDA", "ours": f"{s['attack']} ours"}
    for kind in ("plain", "bpda", "ours"):
        if kind == "bpda" and not s.get("baseline"):
            continue
        cells = [f"{100 * pq[q][f'{kind}_accuracy']:.1f} | {pq[q][f'{kind}_mean_distortion']:.2f}" for q in qs]
        lines.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    lines += ["", "| quality | success on correct: plain / BPDA / ours (%) | ours / plain dist. | BPDA / plain dist. "
              "| attacked | ours grads, fwds per attacked image | s per image: ours, BPDA |",
              "|---|---|---|---|---|---|---|"]
    for q in qs:
        r = pq[q]
        lines.append(f"| {q} | {100 * r['plain_success']:.1f} / {100 * r['bpda_success']:.1f} / "
                     f"{100 * r['ours_success']:.1f} | {r['ours_over_plain_distortion']:.3f} | "
                     f"{r['bpda_over_plain_distortion']:.3f} | {r['attacked']} | {r['ours_mean_gradients']:.1f}, "
                     f"{r['ours_mean_forwards']:.1f} | {r['ours_seconds_per_image']:.2f}, "
                     f"{r['bpda_seconds_per_image']:.2f} |")
    lines += ["", "Accuracy over all images; success over correctly classified originals; distortion (eq. 6.2) "
              "against the spatial original, mean over all images; ratios: summed distortion over correct "
              "originals fooled by that method. Every verdict is on the written file decoded by Pillow."]
    return "\n".join(lines) + "\n"


@experiment("jpeg-table", "Table 7.1 JPEG columns: plain JPEG vs PGD2 BPDA vs BP + JPEG smart quantization")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``jpeg-table`` to ``advimage experiment``'s subparsers; returns the parser."""
    from ..cli_types import quality_list as _qualities

    p = experiment_parser(experiment_subparsers, name, help, out="runs/jpeg-table", limit=24)
    p.add_argument("--qualities", type=_qualities, default=(90, 75), help="comma-separated, e.g. 90,75")
    p.add_argument("--n", type=int, default=10, help="lambda values tested by the JPEG quantizer: n + 1")
    p.add_argument("--baseline", default="pgd", help="attack run through the BPDA JPEG defense ('' to skip)")
    p.add_argument("--baseline-steps", type=int, default=None, help="default: --steps")
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    """Entry point for parsed ``advimage experiment jpeg-table`` arguments."""
    from ..attacks import names as attack_names

    for a in (args.attack, args.baseline):
        if a and a not in attack_names():
            fail(f"unknown attack {a!r}; valid attacks: {', '.join(attack_names())}")
    if args.steps < 1:
        fail("--steps must be >= 1")
    summary = run(args.images, Path(args.out), args.model, args.attack, args.steps, args.qualities, args.df,
                  args.limit, args.batch_size, args.device, baseline=args.baseline,
                  baseline_steps=args.baseline_steps, n=args.n, progress=not args.quiet)
    print(markdown(summary))
    return 0
