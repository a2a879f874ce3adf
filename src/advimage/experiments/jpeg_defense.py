"""Table 7.2: JPEG compression as a defense (reformer) against our quantized adversarial images.

Sources of adversarial images, per original x0:

* ``spatial``: BP best-effort + spatial smart quantization, a PNG written under ``out/spatial/``
  (or, with ``spatial_from``, taken from a folder that holds ``<stem>.png`` for every image, e.g.
  the ``spatial/`` folder of an earlier ``jpeg-defense`` run; ``quant-table`` writes no PNGs since
  commit 713ab66). A folder that lacks files is refused (:class:`SpatialFilesError`), never
  silently completed;
* ``jpeg<q>``: the §7.4.1 JPEG protocol at quality q (plain JPEG if it fools the model, else
  BP on the plain JPEG + JPEG smart quantization), a .jpg (or, with ``from_table``, taken from a
  ``jpeg-table`` output folder that holds ``q<q>/ours/<stem>.jpg`` for every image and quality;
  a folder that lacks files is refused (:class:`TableFilesError`), never silently completed).

Each file is decoded (Pillow) and classified by the model behind a JPEG reformer
(:class:`~advimage.defenses.jpeg.JpegDefense`, no gradient needed) at every defense quality q',
and without defense. The originals x0 are passed through the same defenses for reference
(row ``none``). Reported: accuracy of the defended model over all images (Table 7.2) and the
fraction of correctly classified originals whose file is still adversarial behind the defense.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..cli_support import fail
from ..codec import encode_png, write_atomic
from ..data import DataError, ImageItem, check_labels, discover
from ..defenses.jpeg import JpegDefense
from ..distortion import distortion
from ..engine import Settings, run_batch
from ..images import read_image
from ..models import load_model
from .jpeg_table import jpeg_adversarials, load_batch
from .options import experiment_parser
from .registry import experiment
from .stored import ExperimentRun


class ReusedFilesError(DataError):
    """A folder of files to reuse is missing, lacks some or holds an unreadable one, or one of the
    wrong size or format (the CLI: one line, exit status 2)."""


class SpatialFilesError(ReusedFilesError):
    """``--spatial-from``'s folder is not usable (see :class:`ReusedFilesError`)."""


class TableFilesError(ReusedFilesError):
    """``--from-table``'s folder is not usable (see :class:`ReusedFilesError`)."""


MAKE_SPATIAL = ("advimage experiment jpeg-defense IMAGES --out RUN (same images, --model, --attack, --steps, "
                "--df, --limit) writes them as RUN/spatial/<stem>.png; or drop --spatial-from to compute them here")


def make_table(qualities: tuple[int, ...]) -> str:
    """The command that writes the JPEG files ``--from-table`` reuses, for the refusals."""
    return (f"advimage experiment jpeg-table IMAGES --qualities {','.join(str(q) for q in qualities)} --out RUN "
            "(same images, --model, --attack, --steps, --df, --limit) writes them as RUN/q<Q>/ours/<stem>.jpg; "
            "or drop --from-table to compute them here")


def _listed(missing: list[str]) -> str:
    return ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")


def spatial_files(folder: Path, stems: list[str]) -> list[Path]:
    """``folder/<stem>.png`` for every stem, or :class:`SpatialFilesError` naming the missing ones
    and the command that makes them (reused files are never silently recomputed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpatialFilesError(f"--spatial-from {folder}: no such folder; {MAKE_SPATIAL}")
    paths = [folder / f"{s}.png" for s in stems]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SpatialFilesError(f"--spatial-from {folder}: {len(missing)} of {len(paths)} spatial PNGs missing "
                                f"({_listed(missing)}); {MAKE_SPATIAL}")
    return paths


def table_files(folder: Path, qualities: tuple[int, ...], stems: list[str]) -> dict[int, dict[str, Path]]:
    """quality -> stem -> ``folder/q<q>/ours/<stem>.jpg`` for every quality and stem, or
    :class:`TableFilesError` naming the missing ones and the command that makes them (reused files
    are all there or refused, never silently completed by recomputing some)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TableFilesError(f"--from-table {folder}: no such folder; {make_table(qualities)}")
    paths = {q: {s: folder / f"q{q}" / "ours" / f"{s}.jpg" for s in stems} for q in qualities}
    every = [p for per_q in paths.values() for p in per_q.values()]
    missing = [p.relative_to(folder).as_posix() for p in every if not p.is_file()]
    if missing:
        raise TableFilesError(f"--from-table {folder}: {len(missing)} of {len(every)} JPEG files missing "
                              f"({_listed(missing)}); {make_table(qualities)}")
    return paths


def check_sizes(paths: list[Path], size: int, *, option: str = "--spatial-from", make: str = MAKE_SPATIAL,
                error: type[ReusedFilesError] = SpatialFilesError, image_format: str | None = None) -> None:
    """Refuse (``error``, a :class:`ReusedFilesError`) a reused file that does not decode, is not
    ``size`` x ``size`` pixels (the model's input, where x0 and the adversarials live) or, if
    ``image_format`` is given (Pillow's name, e.g. ``"JPEG"``), is in another format; option and
    make: the option and the command named in the message."""
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                got, fmt = im.size, im.format
        except OSError as exc:
            raise error(f"{option} {p.parent}: {p.name} is not a readable image ({exc}); {make}") from None
        if image_format is not None and fmt != image_format:
            raise error(f"{option} {p.parent}: {p.name} is a {fmt} file, not a {image_format}; {make}")
        if got != (size, size):
            raise error(f"{option} {p.parent}: {p.name} is {got[0]}x{got[1]}, the model's input {size}x{size}; "
                        f"{make}")


@dataclass
class Row:
    """One adversarial file (or original, source ``none``) and its verdict behind each defense."""

    image: str
    label: int
    correct: bool                 # the spatial original is classified correctly
    source: str                   # "none", "spatial" or "jpeg<q>"
    file: str
    distortion: float             # eq. 6.2 against the spatial original
    fooled: dict[str, bool] = field(default_factory=dict)  # defense ("none", "jpeg<q'>") -> model fooled


@torch.no_grad()
def defended_predictions(model: nn.Module, x: Tensor, defense_qualities: tuple[int, ...]) -> dict[str, Tensor]:
    """Predicted classes (N,) of ``model`` without defense and behind JPEG at each quality."""
    out = {"none": model.predict(x)}
    for q in defense_qualities:
        defended = JpegDefense(model, quality=q, backward="none")
        out[f"jpeg{q}"] = torch.cat([defended(x[i:i + 16]).argmax(1) for i in range(0, len(x), 16)])
    return out


def spatial_adversarials(model: nn.Module, items: list, x0: Tensor, paths: list[Path], *, attack: str = "bp",
                         steps: int = 100, df: float = 1) -> list[Path]:
    """Attack the files ``items`` through the engine (model size, smart quantization) and write
    each result at ``paths``: the quantized PNG, verified or not (Table 7.2 tests every file behind
    the defenses); an original already misclassified is written as it is (distortion 0)."""
    rows = run_batch(model, items, Settings(attack=attack, steps=steps, quantizers=("smart",), df=df, size="model",
                                            margin=0.0))
    for r, x, p in zip(rows, x0, paths):
        write_atomic(p, r.data if r.data is not None else encode_png(x.cpu()))
    return paths


def run(images: list[str], out: Path, model_name: str = "efficientnet_lite0", attack: str = "bp", steps: int = 100,
        qualities: tuple[int, ...] = (90, 75), defense_qualities: tuple[int, ...] = (100, 90, 75, 60), df: float = 1,
        limit: int | None = 24, batch_size: int = 8, device: str | None = None, from_table: Path | None = None,
        spatial_from: Path | None = None, progress: bool = True) -> dict:
    """Run the experiment; the rows in ``out``'s result store (``results.sqlite``, committed per
    batch) and, exported from it, ``rows.json``, ``summary.json``, ``table.md`` under ``out``.

    from_table: a ``jpeg-table`` output folder holding ``q<q>/ours/<stem>.jpg``, a JPEG at the
    model's input size, for every image and quality; a missing folder or file, or an unreadable
    file, one of another size or not a JPEG, raises :class:`TableFilesError` before any attack runs
    (nothing is recomputed). spatial_from: a folder holding a ``<stem>.png`` spatial adversarial,
    at the model's input size, for every image; a missing folder or file, or an unreadable file or
    one of another size, raises :class:`SpatialFilesError` before any attack runs.
    """
    from rich.progress import Progress

    out = Path(out)
    items = discover(images)
    items = items[:limit] if limit else items
    # reused spatial and JPEG files: all present, or refused before the model is even loaded
    stems_all = [it.stem for it in items]
    reused = dict(zip(stems_all, spatial_files(spatial_from, stems_all))) if spatial_from is not None else {}
    table = table_files(from_table, qualities, stems_all) if from_table is not None else {}
    model = load_model(model_name, device=device)
    check_labels(items, model.config.num_classes, model_name)
    check_sizes(list(reused.values()), model.config.input_size)
    check_sizes([p for per_q in table.values() for p in per_q.values()], model.config.input_size,
                option="--from-table", make=make_table(qualities), error=TableFilesError, image_format="JPEG")
    out.mkdir(parents=True, exist_ok=True)
    sources = ["none", "spatial"] + [f"jpeg{q}" for q in qualities]
    t_start = time.perf_counter()
    settings = dict(experiment="jpeg-defense", model=model_name, attack=attack, steps=steps, df=df,
                    qualities=list(qualities), defense_qualities=list(defense_qualities), limit=limit,
                    from_table=str(from_table) if from_table else None,
                    spatial_from=str(spatial_from) if spatial_from else None)
    stored = ExperimentRun(out, settings, lambda r: dict(model=model_name, attack=attack, quantizer=r["source"],
                                                         image=r["image"], label=r["label"],
                                                         distortion=r["distortion"], success=r["fooled"]["none"]))
    with stored, Progress(disable=not progress) as bar:
        task = bar.add_task("jpeg-defense", total=len(items))
        for b in range(0, len(items), batch_size):
            batch = load_batch(items[b:b + batch_size], model.config)
            if not batch:
                continue
            stems = [it.stem for it, _ in batch]
            x0 = torch.stack([t for _, t in batch]).to(model.device)
            y = torch.tensor([it.label if it.label is not None else -1 for it, _ in batch], device=model.device)
            if bool((y < 0).any()):
                y = torch.where(y < 0, model.predict(x0.float()), y)
            correct = model.predict(x0.float()) == y
            files: dict[str, list[Path | None]] = {"none": [None] * len(batch)}
            # spatial PNGs: the folder's (all present, checked above), else attack + spatial smart quantization
            if spatial_from is not None:
                spatial: list[Path] = [reused[s] for s in stems]
            else:
                targets = [out / "spatial" / f"{s}.png" for s in stems]
                subset = [ImageItem(it.path, int(y[j])) for j, (it, _) in enumerate(batch)]
                spatial = spatial_adversarials(model, subset, x0, targets, attack=attack, steps=steps, df=df)
            files["spatial"] = list(spatial)
            # JPEG files: the jpeg-table's (all present, checked above), else the §7.4.1 protocol
            for q in qualities:
                if from_table is not None:
                    files[f"jpeg{q}"] = [table[q][s] for s in stems]
                else:
                    subset = [ImageItem(it.path, int(y[j])) for j, (it, _) in enumerate(batch)]
                    adv = jpeg_adversarials(model, subset, x0, q, [out / f"q{q}" / f"{s}.jpg" for s in stems],
                                            attack=attack, steps=steps, df=df)
                    files[f"jpeg{q}"] = list(adv.paths)
            rows: list[Row] = []
            for source in sources:
                if source == "none":
                    x = x0.float()
                else:
                    x = torch.stack([read_image(p) for p in files[source]]).to(model.device).float()
                preds = defended_predictions(model, x, defense_qualities)
                d = distortion(x, x0)
                for j in range(len(stems)):
                    rows.append(Row(
                        image=batch[j][0].path.name, label=int(y[j]), correct=bool(correct[j]), source=source,
                        file=str(files[source][j]) if files[source][j] is not None else "", distortion=float(d[j]),
                        fooled={k: bool(v[j] != y[j]) for k, v in preds.items()},
                    ))
            stored.commit(asdict(r) for r in rows)
            bar.update(task, advance=len(batch))
        records = stored.records()  # the summary files are exports of the store
    rows = [Row(**r) for r in records]
    summary = summarize(rows, sources, ["none"] + [f"jpeg{q}" for q in defense_qualities])
    summary.update(model=model_name, attack=attack, steps=steps, df=df, qualities=list(qualities),
                   defense_qualities=list(defense_qualities), images=len({r.image for r in rows}),
                   from_table=str(from_table) if from_table else None,
                   spatial_from=str(spatial_from) if spatial_from else None,
                   seconds=time.perf_counter() - t_start)
    (out / "rows.json").write_text(json.dumps(records, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def summarize(rows: list[Row], sources: list[str], defenses: list[str]) -> dict:
    """Per source and defense: ``accuracy`` (all images) and ``still_adversarial`` (correct originals)."""
    out: dict = {"sources": sources, "defenses": defenses, "accuracy": {}, "still_adversarial": {},
                 "mean_distortion": {}}
    for src in sources:
        rs = [r for r in rows if r.source == src]
        correct = [r for r in rs if r.correct]
        n = max(1, len(rs))
        out["accuracy"][src] = {d: sum(not r.fooled[d] for r in rs) / n for d in defenses}
        out["still_adversarial"][src] = {d: sum(r.fooled[d] for r in correct) / max(1, len(correct))
                                         for d in defenses}
        out["mean_distortion"][src] = sum(r.distortion for r in rs) / n
    rs = [r for r in rows if r.source == sources[0]]
    out["n"], out["n_correct"] = len(rs), sum(r.correct for r in rs)
    return out


def markdown(s: dict) -> str:
    """Table 7.2 (accuracy of the defended model, %) and the still-adversarial fractions."""
    defs, names = s["defenses"], {"none": "None"}
    head = [names.get(d, d.upper()) for d in defs]
    label = {"none": "None (originals)", "spatial": "Spatial (PNG)"}
    lines = [f"{s['model']}, {s['images']} images ({s['n_correct']} correctly classified); "
             f"{s['attack']} best-effort {s['steps']} gradients + smart quantization (df={s['df']:g})", "",
             "Accuracy (%) of the model behind a JPEG reformer (Table 7.2):", "",
             "| attack | " + " | ".join(head) + " | mean dist. |", "|---|" + "---|" * (len(defs) + 1)]
    for src in s["sources"]:
        cells = [f"{100 * s['accuracy'][src][d]:.1f}" for d in defs]
        lines.append(f"| {label.get(src, src.upper())} | " + " | ".join(cells) +
                     f" | {s['mean_distortion'][src]:.2f} |")
    lines += ["", "Still adversarial (%) behind the defense, over correctly classified originals:", "",
              "| attack | " + " | ".join(head) + " |", "|---|" + "---|" * len(defs)]
    for src in s["sources"]:
        if src == "none":
            continue
        cells = [f"{100 * s['still_adversarial'][src][d]:.1f}" for d in defs]
        lines.append(f"| {label.get(src, src.upper())} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@experiment("jpeg-defense", "Table 7.2: JPEG compression as a defense against spatially and JPEG-quantized "
            "adversarial images")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``jpeg-defense`` to ``advimage experiment``'s subparsers; returns the parser."""
    from ..cli_types import quality_list as _qualities

    p = experiment_parser(experiment_subparsers, name, help, out="runs/jpeg-defense", limit=24)
    p.add_argument("--qualities", type=_qualities, default=(90, 75),
                   help="qualities of the JPEG adversarial images, comma-separated")
    p.add_argument("--defense-qualities", type=_qualities, default=(100, 90, 75, 60),
                   help="qualities of the JPEG reformer, comma-separated")
    p.add_argument("--from-table", type=Path, default=None,
                   help="reuse a jpeg-table output folder's q<Q>/ours/<stem>.jpg files (every image, every "
                   "--qualities Q); refused if any is missing")
    p.add_argument("--spatial-from", type=Path, default=None,
                   help="reuse a folder holding <stem>.png spatial adversarials for every image (e.g. an earlier "
                   "jpeg-defense run's spatial/); refused if any is missing")
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    """Entry point for parsed ``advimage experiment jpeg-defense`` arguments."""
    from ..attacks import names as attack_names

    if args.attack not in attack_names():
        fail(f"unknown attack {args.attack!r}; valid attacks: {', '.join(attack_names())}")
    if args.steps < 1:
        fail("--steps must be >= 1")
    summary = run(args.images, Path(args.out), args.model, args.attack, args.steps, args.qualities,
                  args.defense_qualities, args.df, args.limit, args.batch_size, args.device,
                  from_table=args.from_table, spatial_from=args.spatial_from, progress=not args.quiet)
    print(markdown(summary))
    return 0
