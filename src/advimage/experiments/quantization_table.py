"""Table 7.1, first columns: an attack's floats vs PNG by rounding vs PNG by smart quantization.

One engine call per batch (:func:`advimage.engine.run_batch`, model size, Scenario A) with the
quantizers ``none`` (the floats), ``round`` and ``smart`` applied to the same attack output; every
file is encoded, decoded by Pillow and re-classified by the engine. Success rates are over images
the model classifies correctly; accuracies over all images (misclassified originals count as
fooled at distortion 0, thesis §6.2.4). Unlabelled files are labelled by the model.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data import check_labels, discover
from ..engine import Row, Settings, run_batch
from .options import experiment_parser
from .registry import experiment
from .stored import ExperimentRun

KINDS = {"none": "float", "round": "round", "smart": "smart"}


def run(images: list[str], out: Path, model_name: str = "efficientnet_lite0", attack: str = "bp", steps: int = 100,
        df: float = 1, limit: int | None = 100, batch_size: int = 16, device: str | None = None,
        progress: bool = True, seed: int = 0) -> dict:
    """Run the experiment: rows in ``out``'s result store (``results.sqlite``), exported as
    ``out/rows.json``, ``out/summary.json`` and ``out/table.md``."""
    from ..models import load_model
    from ..progress import progress_bar

    model = load_model(model_name, device=device)
    items = discover(images)[:limit] if limit else discover(images)
    check_labels(items, model.config.num_classes, model_name)
    settings = Settings(attack=attack, steps=steps, quantizers=tuple(KINDS), df=df, size="model", seed=seed,
                        margin=0.0)  # the thesis protocol: files on the boundary
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(model=model_name, attack=attack, steps=steps, df=df, seed=seed)
    with ExperimentRun(out, dict(meta, experiment="quant-table", limit=limit, engine=settings.identity()),
                       lambda r: _columns(r, model_name, attack)) as stored:
        with progress_bar(progress) as bar:
            task = bar.add_task("quant-table", total=len(items), status="")
            for i in range(0, len(items), batch_size):
                batch = items[i:i + batch_size]
                stored.commit(r.to_dict() for r in run_batch(model, batch, settings))
                bar.update(task, advance=len(batch))
        records = stored.records()  # the summary files are exports of the store
    summary = summarize([Row(**r) for r in records])
    summary.update(meta)
    (out / "rows.json").write_text(json.dumps(records, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def _columns(r: Mapping[str, Any], model_name: str, attack: str) -> dict:
    """An engine row's common store columns."""
    return dict(model=model_name, attack=attack, quantizer=r["quantizer"], image=r["key"], label=r["label"],
                prediction=r["original_prediction"], adv_label=r["adversarial_label"], distortion=r["distortion"],
                success=r["status"] in ("fooled", "misclassified"), gradients=r["gradients"], queries=r["queries"],
                seconds=r["seconds"], error=r["error"])


def summarize(rows: list[Row]) -> dict:
    """Accuracy (all images) and success / mean distortion (correctly classified images) per output."""
    by_image: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_image.setdefault(r.key, {})[r.quantizer] = r
    images = [v for v in by_image.values() if all(r.status != "error" for r in v.values())]
    n = len(images)
    correct = [v for v in images if next(iter(v.values())).status != "misclassified"]
    out: dict = {"images": n, "errors": len(by_image) - n, "n_correct": len(correct),
                 "accuracy_clean": len(correct) / max(1, n)}
    for q, kind in KINDS.items():
        ok = [v[q] for v in correct if v[q].status == "fooled"]
        out[f"{kind}_success"] = len(ok) / max(1, len(correct))
        out[f"{kind}_accuracy"] = (len(correct) - len(ok)) / max(1, n)
        out[f"{kind}_mean_distortion"] = sum(r.distortion for r in ok) / max(1, len(ok))
    out["smart_over_float_success"] = out["smart_success"] / max(1e-12, out["float_success"])
    both = [v for v in correct if v["none"].status == "fooled" and v["smart"].status == "fooled"]
    out["smart_over_float_distortion"] = (sum(v["smart"].distortion for v in both)
                                          / max(1e-12, sum(v["none"].distortion for v in both)))
    out["gradients_max"] = max((r.gradients for r in rows), default=0)
    out["seconds_per_image"] = sum(next(iter(v.values())).seconds for v in images) / max(1, n)
    return out


def markdown(s: dict) -> str:
    df = s["df"]
    lines = [
        f"{s['attack']} best-effort, {s['steps']} gradients in all (attack + quantizer), {s['model']}, "
        f"{s['images']} images (clean accuracy {100 * s['accuracy_clean']:.1f}%, "
        f"{s['n_correct']} correctly classified)",
        "",
        "| output | accuracy (%) | success on correct (%) | mean distortion |",
        "|---|---|---|---|",
    ]
    for kind, name in (("float", "floats"), ("round", "PNG, rounding"),
                       ("smart", f"PNG, smart (df={df:g})" if not math.isinf(df) else "PNG, smart (df=inf)")):
        lines.append(f"| {name} | {100 * s[f'{kind}_accuracy']:.1f} | {100 * s[f'{kind}_success']:.1f} | "
                     f"{s[f'{kind}_mean_distortion']:.3f} |")
    lines += ["", f"smart / float success: {s['smart_over_float_success']:.3f}; smart / float mean distortion "
              f"(images where both succeed): {s['smart_over_float_distortion']:.3f}; "
              f"{s['seconds_per_image']:.2f} s per image"]
    return "\n".join(lines) + "\n"


@experiment("quant-table", "Table 7.1 first columns: floats vs PNG rounding vs PNG smart")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``quant-table`` to ``advimage experiment``'s subparsers."""
    p = experiment_parser(experiment_subparsers, name, help, out="runs/quant-table", limit=100, batch_size=16)
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    summary = run(args.images, Path(args.out), args.model, args.attack, args.steps, args.df, args.limit,
                  args.batch_size, args.device, progress=not args.quiet, seed=args.seed)
    print(markdown(summary))
    return 0
