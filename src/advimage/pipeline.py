"""From files to verified adversarial files: read -> attack -> quantize -> write -> re-read -> check.

The file is the truth: reported success and distortion are those of the image read back from
disk with Pillow (or NumPy for unquantized ``.npy`` output).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .attacks import get as get_attack
from .data import ImageItem
from .distortion import distortion, psnr
from .images import ImageReadError, load_for_model, read_image, write_png
from .models import PixelClassifier
from .quantize import QUANTIZERS, quantize, round_pixels


@dataclass
class ImageOutcome:
    """One attacked image, as verified on the written file."""

    file: str
    output: str | None = None
    figure: str | None = None
    label: int | None = None
    label_name: str = ""
    original_prediction: int | None = None
    adversarial_label: int | None = None
    adversarial_name: str = ""
    distortion: float = float("nan")
    psnr: float = float("nan")
    float_success: bool = False
    float_distortion: float = float("nan")
    gradients: int = 0
    forwards: int = 0
    verified: bool = False
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return d


def _batches(items: list[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def read_adversarial(path: Path) -> Tensor:
    """Read a written adversarial file back as float pixels (3, H, W), with Pillow (NumPy for .npy)."""
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    return read_image(path).float()


def _write_outputs(items, x_out, out_dir: Path, quantizer: str, quality: int) -> list[Path]:
    written = []
    for item, xo in zip(items, x_out):
        if quantizer == "none":
            path = out_dir / f"{item.stem}_adv.npy"
            np.save(path, xo.detach().cpu().numpy().astype(np.float32))
        elif quantizer == "jpeg":
            from .jpeg.io import write_coefficients
            path = out_dir / f"{item.stem}_adv.jpg"
            write_coefficients(path, xo.cpu(), quality)
        else:
            path = write_png(out_dir / f"{item.stem}_adv.png", xo.cpu())
        written.append(path)
    return written


def attack_batch(model: PixelClassifier, items: list[ImageItem], out_dir: Path, *, attack: str = "bp",
                 steps: int = 100, quantizer: str = "smart", df: float = 1, quality: int = 90,
                 target: int | None = None, figures: bool = True, **attack_params) -> list[ImageOutcome]:
    """Attack one batch of files and verify the written outputs; unreadable files become error rows."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; valid: {', '.join(QUANTIZERS)}")
    start = time.perf_counter()
    outcomes: dict[int, ImageOutcome] = {}
    good: list[int] = []
    originals: list[Tensor] = []
    for i, item in enumerate(items):
        outcomes[i] = ImageOutcome(file=str(item.path), label=item.label)
        try:
            originals.append(load_for_model(item.path, model.config))
            good.append(i)
        except ImageReadError as exc:
            outcomes[i].error = str(exc)
    if good:
        _attack_good(model, [items[i] for i in good], [outcomes[i] for i in good], torch.stack(originals),
                     out_dir, attack, steps, quantizer, df, quality, target, figures, attack_params)
    elapsed = (time.perf_counter() - start) / max(1, len(items))
    for o in outcomes.values():
        o.seconds = elapsed
    return [outcomes[i] for i in range(len(items))]


def _attack_good(model, items, outcomes, x0_u8, out_dir, attack, steps, quantizer, df, quality, target, figures,
                 params):
    device = model.device
    x0 = x0_u8.to(device).float()
    pred0 = model.predict(x0)
    labels = torch.tensor([o.label if o.label is not None else int(p) for o, p in zip(outcomes, pred0)],
                          device=device)
    targeted = target is not None
    y = torch.full_like(labels, target) if targeted else labels
    x_start = x0
    if quantizer == "jpeg":  # thesis §7.4.1: the attack starts from the JPEG-compressed original
        from .jpeg.io import compress
        x_start = compress(x0_u8, quality).to(device).float()
    res = get_attack(attack)(model, x_start, y, steps=steps, targeted=targeted, **params)
    grads, fwds = res.gradients.clone(), res.forwards.clone() + 1  # + the prediction on x0
    if quantizer == "jpeg":
        from .quantize.jpeg import quantize_jpeg
        qj = quantize_jpeg(model, x0, res.x_adv, y, quality=quality, df=df, targeted=targeted)
        x_out = qj.coefficients
        grads += qj.gradients.to(grads)
        fwds += qj.forwards.to(fwds)
    elif quantizer == "smart":
        q = quantize(model, x0, res.x_adv, y, df=df, targeted=targeted)
        x_out = q.x_q
        grads += q.gradients
        fwds += q.forwards
    elif quantizer == "round":
        x_out = round_pixels(res.x_adv)
    else:
        x_out = res.x_adv
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write_outputs(items, x_out, out_dir, quantizer, quality)
    # verification: re-read every file with an independent decoder and re-run the model
    x_file = torch.stack([read_adversarial(p) for p in written]).to(device)
    pred = model.predict(x_file)
    fooled = pred == y if targeted else pred != y
    d_file, p_file = distortion(x_file, x0), psnr(x_file, x0)
    for j, (o, item) in enumerate(zip(outcomes, items)):
        o.output = str(written[j])
        o.label = int(labels[j])
        o.label_name = model.class_name(o.label)
        o.original_prediction = int(pred0[j])
        o.adversarial_label = int(pred[j])
        o.adversarial_name = model.class_name(o.adversarial_label)
        o.distortion = float(d_file[j])
        o.psnr = float(p_file[j])
        o.float_success = bool(res.success[j])
        o.float_distortion = float(res.distortion[j])
        o.gradients = int(grads[j])
        o.forwards = int(fwds[j])
        o.verified = bool(fooled[j])
        if figures:
            from .figures import save_comparison
            title_adv = f"{o.adversarial_name} (d={o.distortion:.3f}, {o.psnr:.1f} dB)"
            o.figure = str(save_comparison(out_dir / f"{item.stem}_compare.png", x0_u8[j], x_file[j].cpu(),
                                           f"original: {model.class_name(int(pred0[j]))}", title_adv))


def attack_files(model: PixelClassifier, items: list[ImageItem], out_dir: str | Path, *, batch_size: int = 8,
                 progress: bool = True, **kwargs) -> list[ImageOutcome]:
    """Attack every item in batches, with a progress bar; see :func:`attack_batch` for options."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    out_dir = Path(out_dir)
    results: list[ImageOutcome] = []
    columns = [TextColumn("[bold]attack"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("attack", total=len(items), status="")
        for batch in _batches(items, batch_size):
            results.extend(attack_batch(model, batch, out_dir, **kwargs))
            done = [r for r in results if r.error is None]
            rate = sum(r.verified for r in done) / max(1, len(done))
            bar.update(task, advance=len(batch), status=f"verified {rate:.0%}")
    return results
