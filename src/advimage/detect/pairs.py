"""Pair sets for detector training and testing: a folder with ``pairs.csv``.

Columns ``source,cover,adversarial,split`` (any order) plus optional extra columns, kept as
strings. ``cover`` and ``adversarial`` are paths relative to the folder (PNG files), ``split`` is
``train`` or ``test`` and ``source`` identifies the source photo: a source in both splits is
refused (the same photo in train and test would leak). An optional ``success`` column
(1/0, true/false, yes/no) says whether the adversarial image fooled the classifier; it gives
P(fool both) in ``advimage detect evaluate``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED = ("source", "cover", "adversarial", "split")
SPLITS = ("train", "test")
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


class PairSetError(ValueError):
    """A pair set that cannot be used (missing file or column, bad split, leak between splits)."""


@dataclass(frozen=True)
class Pair:
    """One cover and its adversarial version (absolute paths), from row ``row`` of pairs.csv."""

    source: str
    cover: Path
    adversarial: Path
    split: str
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0

    @property
    def success(self) -> bool | None:
        """The ``success`` column as a bool (None when absent or empty)."""
        v = self.extra.get("success", "").strip().lower()
        if not v:
            return None
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise PairSetError(f"pairs.csv row {self.row}: success must be 1/0, true/false or yes/no, got {v!r}")


def read_pairs(folder: str | Path, *, check_files: bool = True) -> list[Pair]:
    """Read and validate ``<folder>/pairs.csv`` -> pairs in file order; PairSetError says what is wrong."""
    folder = Path(folder)
    csv_path = folder / "pairs.csv" if folder.is_dir() else folder
    if csv_path.name != "pairs.csv" or not csv_path.is_file():
        raise PairSetError(f"{folder}: not a pair set (no pairs.csv)")
    folder = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise PairSetError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                                   f"(need {','.join(REQUIRED)}; found {','.join(header) or 'none'})")
            rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in r.items()}
                    for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PairSetError(f"{csv_path}: unreadable ({exc})") from None
    pairs, splits_of = [], defaultdict(set)
    for i, r in enumerate(rows, start=2):  # row 1 is the header
        if not r.get("source"):
            raise PairSetError(f"{csv_path} row {i}: empty source")
        if r["split"] not in SPLITS:
            raise PairSetError(f"{csv_path} row {i}: split must be train or test, got {r['split']!r}")
        paths = {}
        for col in ("cover", "adversarial"):
            if not r[col]:
                raise PairSetError(f"{csv_path} row {i}: empty {col}")
            p = folder / r[col]
            if check_files and not p.is_file():
                raise PairSetError(f"{csv_path} row {i}: {col} file {p} not found")
            paths[col] = p
        splits_of[r["source"]].add(r["split"])
        extra = {k: v for k, v in r.items() if k not in REQUIRED and k}
        pairs.append(Pair(r["source"], paths["cover"], paths["adversarial"], r["split"], extra, i))
    if not pairs:
        raise PairSetError(f"{csv_path}: no pairs")
    leaks = sorted(s for s, sp in splits_of.items() if len(sp) > 1)
    if leaks:
        more = f" (and {len(leaks) - 5} more)" if len(leaks) > 5 else ""
        raise PairSetError(f"{csv_path}: the same photo in train and test: source(s) {', '.join(leaks[:5])}{more}")
    for pair in pairs:
        pair.success  # noqa: B018 (validates the column early)
    return pairs


def split(pairs: list[Pair], name: str) -> list[Pair]:
    """The pairs of one split (``train`` or ``test``)."""
    if name not in SPLITS:
        raise ValueError(f"split must be train or test, got {name!r}")
    return [p for p in pairs if p.split == name]
