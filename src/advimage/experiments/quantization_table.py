"""Table 7.1, first columns: an attack's floats vs PNG by rounding vs PNG by smart quantization.

For each image: attack once (best-effort), then write two PNGs (rounded, smart-quantized),
read them back with Pillow and re-run the model. Success rates are over images the model
classifies correctly; accuracies over all images (misclassified originals count as fooled at
distortion 0, thesis §6.2.4).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..attacks import get as get_attack
from ..data import discover
from ..distortion import distortion
from ..images import ImageReadError, load_for_model, read_image, write_png
from ..models import load_model
from ..quantize import quantize, round_pixels


@dataclass
class Row:
    image: str
    label: int
    correct: bool
    float_success: bool
    float_distortion: float
    round_success: bool
    round_distortion: float
    smart_success: bool
    smart_distortion: float
    gradients: int
    forwards: int
    seconds: float


def run(images: list[str], out: Path, model_name: str = "efficientnet_lite0", attack: str = "bp", steps: int = 100,
        df: float = 1, limit: int | None = 100, batch_size: int = 16, device: str | None = None,
        progress: bool = True) -> dict:
    """Run the experiment and write ``out/rows.json``, ``out/summary.json`` and ``out/table.md``."""
    from rich.progress import Progress

    model = load_model(model_name, device=device)
    items = discover(images)[:limit] if limit else discover(images)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("quant-table", total=len(items))
        for i in range(0, len(items), batch_size):
            batch = []
            for item in items[i:i + batch_size]:
                try:
                    batch.append((item, load_for_model(item.path, model.config)))
                except ImageReadError as exc:
                    print(f"skipped: {exc}")
            if not batch:
                continue
            t0 = time.perf_counter()
            x0 = torch.stack([b[1] for b in batch]).to(model.device).float()
            y = torch.tensor([b[0].label for b in batch], device=model.device)
            correct = model.predict(x0) == y
            res = get_attack(attack)(model, x0, y, steps=steps)
            q = quantize(model, x0, res.x_adv, y, df=df)
            xr = round_pixels(res.x_adv)
            files_r, files_s = [], []
            for (item, _), a, b in zip(batch, xr, q.x_q):
                files_r.append(write_png(out / "round" / f"{item.stem}.png", a.cpu()))
                files_s.append(write_png(out / "smart" / f"{item.stem}.png", b.cpu()))
            xr_file = torch.stack([read_image(p) for p in files_r]).to(model.device).float()
            xs_file = torch.stack([read_image(p) for p in files_s]).to(model.device).float()
            r_ok, s_ok = model.predict(xr_file) != y, model.predict(xs_file) != y
            d_r, d_s = distortion(xr_file, x0), distortion(xs_file, x0)
            dt = (time.perf_counter() - t0) / len(batch)
            for j, (item, _) in enumerate(batch):
                rows.append(Row(
                    image=item.path.name, label=int(y[j]), correct=bool(correct[j]),
                    float_success=bool(res.success[j]), float_distortion=float(res.distortion[j]),
                    round_success=bool(r_ok[j]), round_distortion=float(d_r[j]),
                    smart_success=bool(s_ok[j]), smart_distortion=float(d_s[j]),
                    gradients=int(res.gradients[j] + q.gradients[j]), forwards=int(res.forwards[j] + q.forwards[j]),
                    seconds=dt,
                ))
            bar.update(task, advance=len(batch))
    summary = summarize(rows)
    summary.update(model=model_name, attack=attack, steps=steps, df=df, images=len(rows))
    (out / "rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def summarize(rows: list[Row]) -> dict:
    """Accuracy (all images) and success / mean distortion (correctly classified images) per output."""
    n = len(rows)
    correct = [r for r in rows if r.correct]
    out = {"accuracy_clean": sum(r.correct for r in rows) / n, "n_correct": len(correct)}
    for kind in ("float", "round", "smart"):
        ok = [r for r in correct if getattr(r, f"{kind}_success")]
        out[f"{kind}_success"] = len(ok) / max(1, len(correct))
        out[f"{kind}_accuracy"] = (len(correct) - len(ok)) / n
        out[f"{kind}_mean_distortion"] = sum(getattr(r, f"{kind}_distortion") for r in ok) / max(1, len(ok))
    out["smart_over_float_success"] = out["smart_success"] / max(1e-12, out["float_success"])
    both = [r for r in correct if r.float_success and r.smart_success]
    out["smart_over_float_distortion"] = (
        sum(r.smart_distortion for r in both) / max(1e-12, sum(r.float_distortion for r in both)))
    out["seconds_per_image"] = sum(r.seconds for r in rows) / n
    return out


def markdown(s: dict) -> str:
    lines = [
        f"{s['attack']} best-effort, {s['steps']} gradients, {s['model']}, {s['images']} images "
        f"(clean accuracy {100 * s['accuracy_clean']:.1f}%, {s['n_correct']} correctly classified)",
        "",
        "| output | accuracy (%) | success on correct (%) | mean distortion |",
        "|---|---|---|---|",
    ]
    for kind, name in (("float", "floats"), ("round", "PNG, rounding"), ("smart", f"PNG, smart (df={s['df']:g})")):
        lines.append(f"| {name} | {100 * s[f'{kind}_accuracy']:.1f} | {100 * s[f'{kind}_success']:.1f} | "
                     f"{s[f'{kind}_mean_distortion']:.3f} |")
    lines += ["", f"smart / float success: {s['smart_over_float_success']:.3f}; smart / float mean distortion "
              f"(images where both succeed): {s['smart_over_float_distortion']:.3f}; "
              f"{s['seconds_per_image']:.2f} s per image"]
    return "\n".join(lines) + "\n"
