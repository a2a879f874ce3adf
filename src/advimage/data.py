"""Image sets: a folder with ``labels.csv``, an ImageFolder tree of WordNet ids, files named
``<wnid>_*.JPEG``, or lone files (labelled later by the model's own prediction)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .images import IMAGE_SUFFIXES
from .models.imagenet import wnid_to_index

_WNID = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class ImageItem:
    """One image to attack: its path and ground-truth label (None: use the model's prediction).

    data: the file's bytes when they travel with the item (to a worker on another machine, see
    :mod:`advimage.distributed`); readers then decode them instead of opening ``path``.
    """

    path: Path
    label: int | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)

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


def _label_from_wnid(name: str) -> int | None:
    m = _WNID.match(name)
    if m is None:
        return None
    return wnid_to_index().get(m.group(1))


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
        return [ImageItem(folder / row["filename"], _parse_label(row["label"], f"{path}:{i + 2}"))
                for i, row in enumerate(reader)]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def discover(paths: list[str | Path], missing_ok: bool = False) -> list[ImageItem]:
    """All images under ``paths`` with labels where the set provides them, in a stable order.

    missing_ok: a path that does not exist becomes an item anyway (reading it later gives an
    error row) instead of raising, unless no path exists at all.
    """
    items: list[ImageItem] = []
    if missing_ok and not any(Path(p).exists() for p in paths):
        missing_ok = False  # nothing to attack at all: say so now
    for raw in paths:
        p = Path(raw)
        if missing_ok and not p.exists():
            items.append(ImageItem(p, _label_from_wnid(p.name)))
        elif p.is_file():
            items.append(ImageItem(p, _label_from_wnid(p.name)))
        elif p.is_dir():
            if (p / "labels.csv").is_file():
                items.extend(read_labels_csv(p))
                continue
            subdirs = sorted(d for d in p.iterdir() if d.is_dir() and _WNID.match(d.name))
            if subdirs:  # ImageFolder tree of WordNet ids
                for d in subdirs:
                    label = _label_from_wnid(d.name)
                    if label is None:
                        raise DataError(f"{d}: unknown WordNet id")
                    items.extend(ImageItem(f, label) for f in sorted(d.iterdir()) if _is_image(f))
            else:
                items.extend(ImageItem(f, _label_from_wnid(f.name)) for f in sorted(p.iterdir()) if _is_image(f))
        else:
            raise DataError(f"{p}: no such file or folder")
    if not items:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return items
