"""Experiments' per-image rows in the one result store (:class:`advimage.bench.store.ResultStore`).

A run of an experiment records its settings (``out/results.sqlite`` and ``out/settings.json``)
and commits its rows, batch by batch, as store rows: the common columns (model, attack, quantizer,
image, label, distortion, success, ...) for queries and exports, and the experiment's whole record
(a JSON object) in ``extra``. Its summary files (``rows.json``, ``rows.csv``, ``summary.json``,
tables) are then written from the records read back from the store, so that they are exports of it.
A rerun into the same folder replaces the rows of the same key; the exports are of the current run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..bench.store import ResultStore

#: a record -> its common columns (``model``, ``attack``, ``quantizer``, ``image`` at least)
Columns = Callable[[Mapping[str, Any]], dict[str, Any]]


class ExperimentRun:
    """One run of an experiment in ``out``'s store; use as a context manager.

    settings: the run's settings (JSON-ready); rows committed with them are keyed by their hash.
    columns: a record -> its common columns.
    """

    def __init__(self, out: str | Path, settings: Mapping[str, Any], columns: Columns) -> None:
        self.settings = dict(settings)
        self.columns = columns
        self._keys: set[tuple[str, ...]] = set()
        self.store = ResultStore(out)
        try:
            self.store.start_run(self.settings, seed=self.settings.get("seed"))
        except BaseException:
            self.store.close()
            raise

    def __enter__(self) -> ExperimentRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    def commit(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Commit a batch of records atomically (rows of the same key, e.g. of an earlier run, replaced
        and read back in this run's order; two records of one run with the same key are refused: one
        would hide the other)."""
        # the record as JSON in its own key order (the store would sort a dict's keys), so that
        # exports read back from the store are the files written before it
        rows = [dict(self.columns(r), extra=json.dumps(r)) for r in records]
        keys = [tuple(str(row[k]) for k in ("model", "attack", "quantizer", "image")) for row in rows]
        again = [k for k in keys if k in self._keys] + [k for i, k in enumerate(keys) if k in keys[:i]]
        if again:
            raise ValueError(f"two rows of this run with the same key (model, attack, quantizer, image) {again[0]}: "
                             "image names must be unique in a set")
        self.store.put_batch(rows, settings=self.settings)
        self._keys.update(keys)

    def records(self) -> list[dict[str, Any]]:
        """This run's records as stored, in commit order."""
        return [r["extra"] for r in self.store.rows(run_id=self.store.run_id)]
