"""Image sets: a folder with ``labels.csv``, an ImageFolder tree of WordNet ids, files named
``<wnid>_*.JPEG``, or lone files (labelled later by the model's own prediction)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .images import IMAGE_SUFFIXES
from .models.imagenet import wnid_to_index

_WNID = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class LabelOrigin:
    """Where a label was read: ``labels.csv:LINE``, or the file or folder named by a WordNet id,
    and the label as written there (``"5000"``, ``"n01440764"``)."""

    where: str
    text: str


@dataclass(frozen=True)
class ImageItem:
    """One image to attack: its path and ground-truth label (None: use the model's prediction).

    data: the file's bytes when they travel with the item (to a worker on another machine, see
    :mod:`advimage.distributed`); readers then decode them instead of opening ``path``.
    origin: where the label was read (error messages name it).
    """

    path: Path
    label: int | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)
    origin: LabelOrigin | None = field(default=None, repr=False, compare=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    def with_data(self) -> ImageItem:
        """The same item carrying its file's bytes (unchanged if the file cannot be read: the
        worker then reports the same error as a local run)."""
        if self.data is not None:
            return self
        try:
            return replace(self, data=self.path.read_bytes())
        except OSError:
            return self


class DataError(ValueError):
    """An image set is malformed (bad labels.csv, unknown WordNet id, nothing found)."""


class LabelError(DataError):
    """A label is outside the model's classes."""


def _label_from_wnid(name: str) -> int | None:
    m = _WNID.match(name)
    if m is None:
        return None
    return wnid_to_index().get(m.group(1))


def _named_item(path: Path, named: Path | None = None) -> ImageItem:
    """An item labelled by the WordNet id that starts the name of ``named`` (default: the file), if any."""
    named = named or path
    label = _label_from_wnid(named.name)
    match = _WNID.match(named.name)
    origin = LabelOrigin(str(named), match.group(1)) if label is not None and match else None
    return ImageItem(path, label, origin=origin)


def outside_classes(label: int, num_classes: int, where: str, text: str | None = None,
                    model: str | None = None) -> str:
    """The message for a label outside ``[0, num_classes)``: ``where: label 5000 is outside the
    model's 1000 classes [0, 1000)``."""
    shown = str(label) if text is None or text == str(label) else f"{text} (class {label})"
    whose = f"model {model}'s" if model else "the model's"
    return f"{where}: label {shown} is outside {whose} {num_classes} classes [0, {num_classes})"


def outside_target(target: int, num_classes: int, model: str | None = None) -> str:
    """The message for a target class outside ``[0, num_classes)``."""
    whose = f"model {model}'s" if model else "the model's"
    return f"target {target} is outside {whose} {num_classes} classes [0, {num_classes})"


def check_target(target: int | None, num_classes: int, model: str | None = None) -> None:
    """Refuse (:class:`LabelError`) a target class outside ``[0, num_classes)``: ``target 10 is
    outside model tiny's 10 classes [0, 10)``; None (an untargeted attack) passes."""
    if target is not None and not 0 <= target < num_classes:
        raise LabelError(outside_target(target, num_classes, model))


def check_labels(items: Iterable[ImageItem], num_classes: int, model: str | None = None) -> None:
    """Refuse (:class:`LabelError`) the first label outside ``[0, num_classes)``, naming the
    ``labels.csv`` line, or the file or folder, it came from."""
    for it in items:
        if it.label is not None and not 0 <= it.label < num_classes:
            where, text = (it.origin.where, it.origin.text) if it.origin else (str(it.path), None)
            raise LabelError(outside_classes(it.label, num_classes, where, text, model))


def _parse_label(value: str, where: str) -> int:
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    idx = _label_from_wnid(value)
    if idx is None:
        raise DataError(f"{where}: label {value!r} is neither a class index nor a known WordNet id")
    return idx


def read_labels_csv(folder: Path) -> list[ImageItem]:
    """Items listed in ``folder/labels.csv`` (header with columns filename,label; extra columns ignored)."""
    path = folder / "labels.csv"
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "filename" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise DataError(f"{path}: needs a header with columns 'filename' and 'label'")
        return [_csv_item(folder, row, f"{path}:{i + 2}") for i, row in enumerate(reader)]


def _csv_item(folder: Path, row: dict[str, str], where: str) -> ImageItem:
    text = (row["label"] or "").strip()
    return ImageItem(folder / row["filename"], _parse_label(text, where), origin=LabelOrigin(where, text))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def discover(paths: Sequence[str | os.PathLike[str]], missing_ok: bool = False) -> list[ImageItem]:
    """All images under ``paths`` with labels where the set provides them, in a stable order.

    missing_ok: a path that does not exist becomes an item anyway (reading it later gives an
    error row) instead of raising, unless no path exists at all.
    """
    items: list[ImageItem] = []
    if missing_ok and not any(Path(p).exists() for p in paths):
        missing_ok = False  # nothing to attack at all: say so now
    for raw in paths:
        p = Path(raw)
        if (missing_ok and not p.exists()) or p.is_file():
            items.append(_named_item(p))
        elif p.is_dir():
            if (p / "labels.csv").is_file():
                items.extend(read_labels_csv(p))
                continue
            subdirs = sorted(d for d in p.iterdir() if d.is_dir() and _WNID.match(d.name))
            if subdirs:  # ImageFolder tree of WordNet ids
                for d in subdirs:
                    if _label_from_wnid(d.name) is None:
                        raise DataError(f"{d}: unknown WordNet id")
                    items.extend(_named_item(f, d) for f in sorted(d.iterdir()) if _is_image(f))
            else:
                items.extend(_named_item(f) for f in sorted(p.iterdir()) if _is_image(f))
        else:
            raise DataError(f"{p}: no such file or folder")
    if not items:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return items
