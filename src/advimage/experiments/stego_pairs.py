"""Cover/adversarial pair sets for steganalysis (thesis §8.4): crops, attacks, verified PNG files.

A run folder holds::

    covers/<source>-<j>.png        square crops of the source photos, resized to --size
    crops.csv                      file, source, split, label, prediction
    adv/<variant>/<crop>_adv.png   adversarial files of one attack + quantizer (+ df), verified
                                   by the engine before they are written (only files that fool)
    results.sqlite                 every attacked crop × variant, one row committed per batch
                                   (:mod:`.stego_rows`): success (of the decoded file), output, l2, ...
    adv/<variant>/rows.csv         export of the variant's stored rows
    sets/<variant>/pairs.csv       the successful pairs (export of the stored rows), read by
                                   ``advimage detect``

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
from ..criteria import Misclassification
from ..data import ImageItem
from ..images import ImageReadError, read_pil
from .stego_rows import StegoRows, rows_csv


@dataclass(frozen=True)
class Variant:
    """One way of making adversarial files: attack (budget ``steps``) + quantizer at ``df``
    (advimage's Ch. 7 convention; Ch. 8's d_f = df + 1) on one split; guard: the detector the
    attack also fools (adaptive attack, :mod:`advimage.detect.adaptive`), "" for none."""

    split: str
    attack: str
    steps: int
    quantizer: str
    df: int
    quantizer_steps: int
    guard: str = ""

    @property
    def name(self) -> str:
        return f"{self.split}-{self.attack}-{self.quantizer}-df{self.df}" + (f"-vs-{self.guard}" if self.guard else "")

    @property
    def df_ch8(self) -> int:
        return self.df + 1

    def settings(self, seed: int = 0):
        """The engine's :class:`~advimage.engine.Settings` of this variant (crops fed to the model as
        they are: ``size="model"``; margin 0, the thesis's protocol): its quantizer options and its
        files' verification. ``steps`` stays the attack's own budget, the quantizer's gradients on top."""
        from ..engine import Settings
        from ..quantize import spec as quantizer_spec

        q = quantizer_spec(self.quantizer)
        return Settings(attack=self.attack, steps=self.steps + q.gradients, quantizers=(self.quantizer,),
                        df=self.df if q.uses_df else None, size="model", margin=0.0,
                        quantizer_steps=self.quantizer_steps, seed=seed)


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


def make_variants(model, out: Path, rows: list[dict], group: list[Variant], *, store: StegoRows, batch_size: int,
                  limits: dict[str, int | None], progress=None, seed: int = 0,
                  attacked=None, criterion=None) -> dict[str, list[dict]]:
    """Variants sharing one attack (same split, attack and budget): each batch is attacked once and
    every quantizer works on the same float output; the engine encodes and verifies each file
    (:func:`advimage.engine.verify_row`), and only verified files are written
    (:func:`advimage.engine.write_outputs`, ``<stem>_adv.png``).

    Resumable and reproducible: the crops are cut into fixed batches (the same whatever is already
    done), each variant's rows are committed to ``store`` per batch (what a resume reads as done),
    and a batch runs again only for the variants that miss it; ``rows.csv`` and ``pairs.csv`` are
    written from the stored rows at the end. attacked: the classifier the attack and the quantizers go through
    (default ``model``; e.g. a classifier composed with a detector, :mod:`advimage.detect.adaptive`)
    and criterion: labels (N,) -> its criterion (default :class:`~advimage.criteria.Misclassification`);
    files are always verified on ``model`` alone, as misclassified.
    """
    from ..attacks import spec as attack_spec
    from ..engine import Row, verify_row, write_outputs
    from ..quantize import spec as quantizer_spec

    split, attack, steps = group[0].split, group[0].attack, group[0].steps
    criterion = Misclassification if criterion is None else criterion
    if any((v.split, v.attack, v.steps) != (split, attack, steps) for v in group):
        raise ValueError("variants of a group must share split, attack and steps")
    every = targets(rows, split)
    todo = {v.name: every[:limits.get(v.name)] for v in group}
    done = {v.name: store.done(v.name, v.quantizer) for v in group}
    wanted = {r["file"] for v in group for r, _ in todo[v.name]}
    scheduled = [(r, y) for r, y in every if r["file"] in wanted]  # fixed batches, whatever is done
    total = sum(len(t) for t in todo.values())
    task = progress.add_task(f"{split}: {attack} + " + ", ".join(f"{v.quantizer}/df{v.df}" for v in group),
                             total=total, completed=sum(1 for v in group for r, _ in todo[v.name]
                                                        if r["file"] in done[v.name]),
                             status="") if progress else None
    device = _device(model)
    attacked = model if attacked is None else attacked
    aspec = attack_spec(attack)
    mine = {v.name: {r["file"] for r, _ in todo[v.name]} for v in group}
    for start in range(0, len(scheduled), batch_size):
        chunk = scheduled[start:start + batch_size]
        missing = {v.name: [i for i, (r, _) in enumerate(chunk) if r["file"] in mine[v.name]
                            and r["file"] not in done[v.name]] for v in group}
        if not any(missing.values()):
            continue
        torch.manual_seed(seed + start)
        x0_u8 = torch.stack([_read_u8(out / "covers" / r["file"]) for r, _ in chunk])
        x0 = x0_u8.float().to(device)
        y = torch.tensor([label for _, label in chunk], device=device)
        t0 = time.perf_counter()
        params = {"seed": seed} if aspec.seeded else {}
        adv = aspec.run(attacked, x0, y if criterion is Misclassification else criterion(y), steps=steps, **params)
        attack_seconds = (time.perf_counter() - t0) / len(chunk)
        for v in group:
            idx = missing[v.name]
            if not idx:
                continue
            settings = v.settings(seed)
            qspec = quantizer_spec(v.quantizer)
            sel = torch.tensor(idx, device=device)
            t1 = time.perf_counter()
            q = qspec.run(attacked, x0[sel], adv.x_adv[sel], criterion(y[sel]),
                          **settings.quantizer_options(v.quantizer))
            q_seconds = (time.perf_counter() - t1) / len(idx)
            folder = out / "adv" / v.name
            folder.mkdir(parents=True, exist_ok=True)
            made = []
            for j, i in enumerate(idx):
                r, label = chunk[i]
                row = Row(file=r["file"], key=r["file"], quantizer=v.quantizer, label=label, suffix=qspec.suffix,
                          data=q.encode(j), attack_success=bool(adv.success[i]),
                          gradients=int(adv.gradients[i]) + int(q.gradients[j]))
                verify_row(row, model, x0_u8[i], Misclassification(y[i:i + 1]), settings)  # before any write
                made.append((i, row))
            write_outputs([row for _, row in made], folder)
            batch = []
            for j, (i, row) in enumerate(made):
                r, label = chunk[i]
                assert row.data is not None
                l2 = (codec.decode(row.data, row.suffix).float() - x0_u8[i].float()).flatten().norm()
                batch.append({
                    "file": r["file"], "output": Path(row.output).name if row.output else "", "source": r["source"],
                    "split": split, "label": label, "float_success": int(adv.success[i]),
                    "success": int(row.verified), "l2": f"{float(l2):.4f}",
                    "rmse": f"{float(l2) / np.sqrt(x0_u8[i].numel()):.5f}",
                    "attack_gradients": int(adv.gradients[i]), "attack_forwards": int(adv.forwards[i]),
                    "quantizer_gradients": int(q.gradients[j]), "quantizer_forwards": int(q.forwards[j]),
                    "attack_seconds": f"{attack_seconds:.3f}", "quantizer_seconds": f"{q_seconds:.3f}",
                })
            store.commit(v.name, v.quantizer, batch)
            done[v.name].update((b["file"], b) for b in batch)
            if progress:
                progress.advance(task, len(idx))
    result = {}
    for v in group:  # the rows as stored, read back: what the exports, the detectors and the tables see
        stored = store.done(v.name, v.quantizer)
        result[v.name] = [stored[r["file"]] for r, _ in todo[v.name]]
        write_rows(out, v, result[v.name])
        write_pairs(out, v, result[v.name])
    return result


def write_rows(out: Path, variant: Variant, rows: list[dict]) -> Path:
    """``adv/<variant>/rows.csv``: every attacked crop's record (an export of the stored rows)."""
    path = rows_csv(out, variant.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(path, rows)
    return path


def write_pairs(out: Path, variant: Variant, rows: list[dict]) -> Path:
    """``sets/<variant>/pairs.csv``: the successful files with their covers (paths relative to it)."""
    (out / "adv" / variant.name).mkdir(parents=True, exist_ok=True)
    folder = out / "sets" / variant.name
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [{"source": r["source"], "cover": f"../../covers/{r['file']}",
              "adversarial": f"../../adv/{variant.name}/{r['output']}", "split": variant.split,
              "success": r["success"], "l2": r["l2"]} for r in rows if int(r["success"])]
    path = folder / "pairs.csv"
    _write_csv(path, pairs, fields=["source", "cover", "adversarial", "split", "success", "l2"])
    return path


def _read_u8(path: Path) -> torch.Tensor:
    return codec.decode(path.read_bytes(), ".png")


def _read(path: Path) -> torch.Tensor:
    return _read_u8(path).float()


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
