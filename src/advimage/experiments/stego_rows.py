"""stego-table's per-crop rows in the run folder's result store (:class:`advimage.bench.store.ResultStore`).

One store row per crop × variant: ``model`` the run's model, ``attack`` the variant's name
(``<split>-<attack>-<quantizer>-df<df>[-vs-<guard>]``, unique in a run), ``quantizer`` its
quantizer, ``image`` the crop's file; ``label``, ``distortion`` (the decoded file's L2),
``success`` (of the decoded file), ``gradients`` and ``seconds`` (attack + quantizer) for
queries; the whole record of :func:`.stego_pairs.make_variants` (a JSON object, in its own key
order) in ``extra``. Every row of a run is keyed by one settings hash: the run's recorded options
less those ``--resume`` may change (the run's ``settings.json`` refuses any other change), so a
resumed run finds what is done. ``adv/<variant>/rows.csv`` is an export of these rows; a folder of
an earlier version (rows in ``rows.csv`` only) has them imported once, when resumed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..bench.store import ResultStore


class StegoRows:
    """The rows of one stego-table run in ``out``'s store; use as a context manager.

    out: the run folder. model: the model's name. settings: the run's recorded options (JSON-ready),
    recorded as a store run (``settings.json`` stays stego-table's own record). keyed: the settings
    every row is keyed by (options that a resume keeps).
    """

    def __init__(self, out: str | Path, model: str, settings: Mapping[str, Any], keyed: Mapping[str, Any]) -> None:
        self.out = Path(out)
        self.model = model
        self.keyed = dict(keyed)
        self.store = ResultStore(self.out)
        try:
            self.store.start_run(dict(settings), seed=settings.get("seed"), settings_file=False)
        except BaseException:
            self.store.close()
            raise

    def __enter__(self) -> StegoRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    def columns(self, variant: str, quantizer: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record (values as made, or as strings read from a CSV) as a store row."""
        return {"model": self.model, "attack": variant, "quantizer": quantizer, "image": record["file"],
                "label": int(record["label"]), "distortion": float(record["l2"]),
                "success": bool(int(record["success"])),
                "gradients": int(record["attack_gradients"]) + int(record["quantizer_gradients"]),
                "seconds": float(record["attack_seconds"]) + float(record["quantizer_seconds"]),
                "extra": json.dumps(dict(record))}  # a string: the record keeps its key order

    def commit(self, variant: str, quantizer: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Commit one batch of a variant's records atomically (a crop's earlier row replaced)."""
        rows = [self.columns(variant, quantizer, r) for r in records]
        if rows:
            self.store.put_batch(rows, settings=self.keyed)

    def done(self, variant: str, quantizer: str) -> dict[str, dict[str, Any]]:
        """{crop file: record} of the variant's stored rows; a folder of an earlier version without
        stored rows of the variant: its ``adv/<variant>/rows.csv`` imported first."""
        done = self._stored(variant)
        if not done:
            legacy = legacy_rows(self.out, variant)
            if legacy:
                self.commit(variant, quantizer, legacy)
                done = self._stored(variant)
        return done

    def _stored(self, variant: str) -> dict[str, dict[str, Any]]:
        return {r["image"]: r["extra"] for r in self.store.rows(model=self.model, attack=variant,
                                                                   settings=self.keyed)}


def rows_csv(out: Path, variant: str) -> Path:
    """``adv/<variant>/rows.csv``: the export of a variant's rows (earlier versions resumed from it)."""
    return out / "adv" / variant / "rows.csv"


def legacy_rows(out: Path, variant: str) -> list[dict[str, str]]:
    """The rows of ``rows.csv`` (earlier versions wrote it whole after every batch, atomically);
    a row missing a value is left out (its crop is then made again)."""
    path = rows_csv(out, variant)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if all(v not in (None, "") or k == "output" for k, v in r.items())]
