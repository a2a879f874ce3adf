"""Cover/adversarial pair sets for steganalysis (thesis §8.4): crops, attacks, verified PNG files.

A run folder holds::

    covers/<source>-<j>.png        square crops of the source photos, resized to --size
    crops.csv                      file, source, split, label, prediction
    adv/<variant>/<file>.png       adversarial files of one attack + quantizer (+ df)
    adv/<variant>/rows.csv         every attacked crop: success (re-read from the file), l2, ...
    sets/<variant>/pairs.csv       the successful pairs, read by ``advimage detect``

Photos are split by source (never the same photo in train and test). Training pairs are made
for every training crop, moving away from the model's own prediction (a detector learns the
perturbation's traces, not the labels); test pairs only from crops the model classifies
correctly, as in the thesis. ``success`` is always decided on the decoded file.
"""

from __future__ import annotations

import csv
import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import codec
from ..attacks import get as get_attack
from ..criteria import Misclassification
from ..data import ImageItem
from ..images import ImageReadError, read_pil
from ..quantize import run as run_quantizer


@dataclass(frozen=True)
class Variant:
    """One way of making adversarial files: attack (budget ``steps``) + quantizer at ``df``
    (advimage's Ch. 7 convention; Ch. 8's d_f = df + 1) on one split."""

    split: str
    attack: str
    steps: int
    quantizer: str
    df: int
    quantizer_steps: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.attack}-{self.quantizer}-df{self.df}"

    @property
    def df_ch8(self) -> int:
        return self.df + 1


def split_of(source: str, test_fraction: float) -> str:
    """Deterministic split by source photo (a hash, so adding photos never moves others)."""
    h = int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def crop_boxes(width: int, height: int, count: int, seed: int) -> list[tuple[int, int, int, int]]:
    """``count`` square boxes: the largest centred square, then random squares whose side is
    50-100% of the shorter side."""
    rng = np.random.default_rng(seed)
    side = min(width, height)
    boxes = [((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)]
    while len(boxes) < count:
        s = int(rng.integers(side // 2, side + 1))
        left = int(rng.integers(0, width - s + 1))
        top = int(rng.integers(0, height - s + 1))
        boxes.append((left, top, left + s, top + s))
    return boxes


def make_covers(items: list[ImageItem], out: Path, *, size: int, train_crops: int, test_crops: int,
                test_fraction: float, seed: int) -> list[dict]:
    """Write the cover crops (PNG, Pillow's Lanczos downscale) and ``crops.csv``; idempotent."""
    table = out / "crops.csv"
    if table.exists():
        with open(table, newline="") as f:
            return list(csv.DictReader(f))
    (out / "covers").mkdir(parents=True, exist_ok=True)
    rows = []
    for item in items:
        source = Path(item.path).stem
        split = split_of(source, test_fraction)
        try:
            img = read_pil(item.path)
        except ImageReadError as exc:  # unreadable photos are skipped, and said so
            warnings.warn(f"skipping {item.path}: {exc}", stacklevel=2)
            continue
        count = test_crops if split == "test" else train_crops
        digest = int(hashlib.sha256(f"{seed}:{source}".encode()).hexdigest()[:8], 16)
        for j, box in enumerate(crop_boxes(img.width, img.height, count, digest)):
            crop = img.crop(box).resize((size, size), Image.Resampling.LANCZOS)
            name = f"{source}-{j}.png"
            codec.write_atomic(out / "covers" / name, codec.encode_png(torch.from_numpy(np.asarray(crop).copy())
                                                                        .permute(2, 0, 1)))
            rows.append({"file": name, "source": source, "split": split, "label": item.label})
    _write_csv(table, rows)
    return rows


@torch.no_grad()
def classify(model, out: Path, rows: list[dict], batch_size: int) -> list[dict]:
    """Add the model's prediction of every cover to ``crops.csv`` (once)."""
    if rows and "prediction" in rows[0] and rows[0]["prediction"] != "":
        return rows
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        x = torch.stack([_read(out / "covers" / r["file"]) for r in chunk]).to(_device(model))
        for r, p in zip(chunk, model(x).argmax(1).tolist()):
            r["prediction"] = p
    _write_csv(out / "crops.csv", rows)
    return rows


def targets(rows: list[dict], split: str) -> list[tuple[dict, int]]:
    """(crop, class to leave): training crops leave their prediction, test crops their (correct) label."""
    if split == "train":
        return [(r, int(r["prediction"])) for r in rows if r["split"] == "train"]
    return [(r, int(r["label"])) for r in rows if r["split"] == "test" and r["label"] not in ("", None)
            and int(r["prediction"]) == int(r["label"])]


def make_variants(model, out: Path, rows: list[dict], group: list[Variant], *, batch_size: int,
                  limits: dict[str, int | None], progress=None, seed: int = 0) -> dict[str, list[dict]]:
    """Variants sharing one attack (same split, attack and budget): each batch is attacked once and
    every quantizer works on the same float output, then writes, re-reads and re-classifies its
    files. Resumable: ``rows.csv`` of each variant lists the crops already done."""
    split, attack, steps = group[0].split, group[0].attack, group[0].steps
    if any((v.split, v.attack, v.steps) != (split, attack, steps) for v in group):
        raise ValueError("variants of a group must share split, attack and steps")
    every = targets(rows, split)
    todo = {v.name: every[:limits.get(v.name)] for v in group}
    done: dict[str, dict[str, dict]] = {}
    for v in group:
        table = out / "adv" / v.name / "rows.csv"
        done[v.name] = {}
        if table.exists():
            with open(table, newline="") as f:
                done[v.name] = {r["file"]: r for r in csv.DictReader(f)}
    wanted = {r["file"] for v in group for r, _ in todo[v.name] if r["file"] not in done[v.name]}
    pending = [(r, y) for r, y in every if r["file"] in wanted]
    total = sum(len(t) for t in todo.values())
    task = progress.add_task(f"{split}: {attack} + " + ", ".join(f"{v.quantizer}/df{v.df}" for v in group),
                             total=total, completed=total - sum(1 for v in group for r, _ in todo[v.name]
                                                                if r["file"] not in done[v.name]),
                             status="") if progress else None
    device = _device(model)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        torch.manual_seed(seed + start)
        x0 = torch.stack([_read(out / "covers" / r["file"]) for r, _ in chunk]).to(device)
        y = torch.tensor([label for _, label in chunk], device=device)
        t0 = time.perf_counter()
        adv = get_attack(attack)(model, x0, y, steps=steps)
        attack_seconds = (time.perf_counter() - t0) / len(chunk)
        for v in group:
            mine = {r["file"] for r, _ in todo[v.name]} - set(done[v.name])
            idx = [i for i, (r, _) in enumerate(chunk) if r["file"] in mine]
            if not idx:
                continue
            sel = torch.tensor(idx, device=device)
            t1 = time.perf_counter()
            q = run_quantizer(v.quantizer, model, x0[sel], adv.x_adv[sel], y[sel], df=v.df, steps=v.quantizer_steps)
            q_seconds = (time.perf_counter() - t1) / len(idx)
            folder = out / "adv" / v.name
            files = []
            for j in range(len(idx)):
                data = q.encode(j)
                codec.write_atomic(folder / chunk[idx[j]][0]["file"], data)
                files.append(codec.decode(data, ".png").float())
            decoded = torch.stack(files).to(device)
            with torch.no_grad():
                verified = Misclassification(y[sel]).success(model(decoded))
            l2 = (decoded - x0[sel]).flatten(1).norm(dim=1)
            for j, i in enumerate(idx):
                r, label = chunk[i]
                done[v.name][r["file"]] = {
                    "file": r["file"], "source": r["source"], "split": split, "label": label,
                    "float_success": int(adv.success[i]), "success": int(verified[j]), "l2": f"{float(l2[j]):.4f}",
                    "rmse": f"{float(l2[j]) / np.sqrt(decoded[j].numel()):.5f}",
                    "attack_gradients": int(adv.gradients[i]), "attack_forwards": int(adv.forwards[i]),
                    "quantizer_gradients": int(q.gradients[j]), "quantizer_forwards": int(q.forwards[j]),
                    "attack_seconds": f"{attack_seconds:.3f}", "quantizer_seconds": f"{q_seconds:.3f}",
                }
            _write_csv(out / "adv" / v.name / "rows.csv",
                       [done[v.name][r["file"]] for r, _ in todo[v.name] if r["file"] in done[v.name]])
            if progress:
                progress.advance(task, len(idx))
    result = {}
    for v in group:
        result[v.name] = [done[v.name][r["file"]] for r, _ in todo[v.name]]
        write_pairs(out, v, result[v.name])
    return result


def write_pairs(out: Path, variant: Variant, rows: list[dict]) -> Path:
    """``sets/<variant>/pairs.csv``: the successful files with their covers (paths relative to it)."""
    (out / "adv" / variant.name).mkdir(parents=True, exist_ok=True)
    folder = out / "sets" / variant.name
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [{"source": r["source"], "cover": f"../../covers/{r['file']}",
              "adversarial": f"../../adv/{variant.name}/{r['file']}", "split": variant.split,
              "success": r["success"], "l2": r["l2"]} for r in rows if int(r["success"])]
    path = folder / "pairs.csv"
    _write_csv(path, pairs, fields=["source", "cover", "adversarial", "split", "success", "l2"])
    return path


def _read(path: Path) -> torch.Tensor:
    return codec.decode(path.read_bytes(), ".png").float()


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else ["file"])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
