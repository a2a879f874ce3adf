"""The one per-image result store, of benchmark runs and experiments alike: one SQLite file (WAL
mode) in the run directory.

One row per (model, attack, quantizer, image, settings hash): re-running a finished
configuration reuses its rows and never duplicates them. Each finished batch is committed
atomically (:meth:`ResultStore.add_batch`), so a crash, SIGKILL or Ctrl-C loses at most the
batch in progress; :meth:`ResultStore.done` tells a resumed run which images to skip, and
:meth:`ResultStore.refuse_other_settings` refuses to resume a store made with other settings.
What an experiment measures beyond the common columns goes into ``extra`` (a JSON object); its
summary files are exports of the stored rows. This module imports nothing else of advimage.

Layout of ``run_dir``: ``results.sqlite`` (tables ``results``, ``runs``, ``settings``) and
``settings.json`` (the latest run's settings, seed and package versions).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

DB_NAME = "results.sqlite"
SETTINGS_NAME = "settings.json"

#: Columns of the ``results`` table, in export order, with their SQLite types.
COLUMNS: dict[str, str] = {
    "run_id": "TEXT NOT NULL",
    "model": "TEXT NOT NULL",
    "attack": "TEXT NOT NULL",
    "quantizer": "TEXT NOT NULL",   # "none" when not quantized; never NULL (UNIQUE key)
    "image": "TEXT NOT NULL",
    "settings_hash": "TEXT NOT NULL",
    "label": "INTEGER",             # ground truth class
    "prediction": "INTEGER",        # prediction on the original
    "adv_label": "INTEGER",         # prediction on the adversarial image (read back)
    "distortion": "REAL",           # eq. (6.2), pixel units
    "success": "INTEGER",           # 0/1
    "gradients": "INTEGER",
    "queries": "INTEGER",
    "seconds": "REAL",
    "error": "TEXT",                # NULL when the image was processed without error
    "extra": "TEXT",                # JSON object or NULL
    "created": "REAL NOT NULL",     # unix time of the commit
}
KEY = ("model", "attack", "quantizer", "image", "settings_hash")
_AUTO = {"run_id", "settings_hash", "created"}
_VERSIONED = ("torch", "torchvision", "timm", "numpy", "advimage")


def settings_hash(settings: Mapping[str, Any]) -> str:
    """16 hex chars of SHA-256 over the canonical JSON of ``settings`` (sorted keys)."""
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:16]


def _canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def package_versions() -> dict[str, str | None]:
    """Versions of python and the main packages (None where not installed), without importing them."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class SettingsMismatch(ValueError):
    """A store holds a run made with other settings than the ones asked for."""


class ResultStore:
    """Per-image results of a run directory; use as a context manager or call :meth:`close`.

    Several processes may open the same store; writes are serialised by SQLite.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / DB_NAME
        self.run_id: str | None = None
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")   # a commit survives power loss too
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cols = ",\n  ".join(f"{k} {t}" for k, t in COLUMNS.items())
        with self._transaction():
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n"
                               f"  UNIQUE ({', '.join(KEY)}))")
            self._conn.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, "
                               "started REAL NOT NULL, settings TEXT NOT NULL, versions TEXT NOT NULL, "
                               "seed INTEGER, argv TEXT NOT NULL)")
            self._conn.execute("CREATE TABLE IF NOT EXISTS settings (settings_hash TEXT PRIMARY KEY, "
                               "settings TEXT NOT NULL)")

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (committed data is already on disk)."""
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # -- run metadata ---------------------------------------------------------------------
    def start_run(self, settings: Mapping[str, Any], *, seed: int | None = None,
                  run_id: str | None = None, settings_file: bool = True) -> str:
        """Record a run (settings, seed, package versions, argv); returns its id.

        Also writes ``settings.json`` atomically, unless ``settings_file`` is False (a caller that
        keeps its own record there). Rows added later get this ``run_id``.
        """
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
        versions = package_versions()
        meta = {"run_id": run_id, "seed": seed, "settings": dict(settings), "versions": versions,
                "argv": list(sys.argv), "started": time.time()}
        with self._transaction():
            self._conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                               (run_id, meta["started"], _canonical(settings), json.dumps(versions),
                                seed, json.dumps(meta["argv"])))
        if settings_file:
            tmp = self.run_dir / (SETTINGS_NAME + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            os.replace(tmp, self.run_dir / SETTINGS_NAME)
        self.run_id = run_id
        return run_id

    def runs(self) -> list[dict[str, Any]]:
        """Recorded runs, oldest first, with settings/versions/argv decoded."""
        out = []
        for r in self._conn.execute("SELECT * FROM runs ORDER BY started"):
            d = dict(r)
            for k in ("settings", "versions", "argv"):
                d[k] = json.loads(d[k])
            out.append(d)
        return out

    def refuse_other_settings(self, settings: Mapping[str, Any], keys: Iterable[str]) -> None:
        """Raise :class:`SettingsMismatch` if a run recorded here had other values of ``keys`` than
        ``settings`` (a missing key counts as None); what differs is named."""
        keys = list(keys)
        settings = json.loads(_canonical(settings))  # as stored: tuples as lists, others as str
        for run in self.runs():
            old = run["settings"]
            diff = [k for k in keys if old.get(k) != settings.get(k)]
            if diff:
                was = ", ".join(f"{k} {old.get(k)!r}" for k in diff)
                now = ", ".join(f"{k} {settings.get(k)!r}" for k in diff)
                raise SettingsMismatch(f"{self.run_dir} holds results made with {was} (asked: {now})")

    def settings_of(self, hash_: str) -> dict[str, Any] | None:
        """The settings dict stored for a settings hash, or None."""
        r = self._conn.execute("SELECT settings FROM settings WHERE settings_hash = ?",
                               (hash_,)).fetchone()
        return None if r is None else json.loads(r[0])

    # -- writing --------------------------------------------------------------------------
    def add_batch(self, rows: Iterable[Mapping[str, Any]], *, settings: Mapping[str, Any],
                  replace: bool = False) -> int:
        """Commit a batch of per-image rows atomically (all or nothing); returns rows written.

        rows: dicts with at least model, attack, quantizer, image, and any of the other
            columns of :data:`COLUMNS` (``extra`` may be a dict). ``run_id`` defaults to the
            current run (:meth:`start_run` must have been called). settings: the settings of
            the whole batch, hashed into the UNIQUE key.
        replace: overwrite existing rows with the same key. Otherwise existing rows are kept,
            except rows holding an ``error``, which a new row replaces.
        """
        h = settings_hash(settings)
        now = time.time()
        values = [self._row_values(r, h, now) for r in rows]
        names = list(COLUMNS)
        set_all = ", ".join(f"{c} = excluded.{c}" for c in names if c not in KEY)
        where = "" if replace else " WHERE results.error IS NOT NULL"
        sql = (f"INSERT INTO results ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {set_all}{where}")
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (h, _canonical(settings)))
            before = self._conn.total_changes
            self._conn.executemany(sql, values)
            written = self._conn.total_changes - before
        return written

    def put_batch(self, rows: Iterable[Mapping[str, Any]], *, settings: Mapping[str, Any]) -> int:
        """Commit a batch atomically, replacing the rows of the same key, which move to this commit's
        place in the commit order (so a rerun's rows read back in its own order); returns rows written."""
        h = settings_hash(settings)
        now = time.time()
        values = [self._row_values(r, h, now) for r in rows]
        names = list(COLUMNS)
        at = [names.index(k) for k in KEY]
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (h, _canonical(settings)))
            self._conn.executemany(f"DELETE FROM results WHERE {' AND '.join(f'{k} = ?' for k in KEY)}",
                                   [tuple(v[i] for i in at) for v in values])
            self._conn.executemany(f"INSERT INTO results ({', '.join(names)}) "
                                   f"VALUES ({', '.join('?' * len(names))})", values)
        return len(values)

    def _row_values(self, row: Mapping[str, Any], h: str, now: float) -> tuple[Any, ...]:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown column(s) {sorted(unknown)}; valid: {list(COLUMNS)}")
        missing = [k for k in ("model", "attack", "quantizer", "image") if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"row misses {missing} (use quantizer='none' when not quantized)")
        run_id = row.get("run_id") or self.run_id
        if run_id is None:
            raise ValueError("no run: call start_run(settings) before add_batch")
        out: dict[str, Any] = {k: row.get(k) for k in COLUMNS}
        out.update(run_id=run_id, settings_hash=h, created=now)
        for k in ("model", "attack", "quantizer", "image"):
            out[k] = str(out[k])
        for k in ("label", "prediction", "adv_label", "gradients", "queries"):
            out[k] = None if out[k] is None else int(out[k])
        for k in ("distortion", "seconds"):
            out[k] = None if out[k] is None else float(out[k])
        out["success"] = None if out["success"] is None else int(bool(out["success"]))
        out["error"] = None if not out["error"] else str(out["error"])
        if out["extra"] is not None and not isinstance(out["extra"], str):
            out["extra"] = json.dumps(out["extra"], sort_keys=True, default=str)
        return tuple(out[k] for k in COLUMNS)

    # -- reading --------------------------------------------------------------------------
    def done(self, model: str, attack: str, quantizer: str, settings: Mapping[str, Any], *,
             retry_errors: bool = False) -> set[str]:
        """Images already committed for this configuration (to skip on resume).

        retry_errors: leave out images whose row holds an error, so that they are redone.
        """
        sql = ("SELECT image FROM results WHERE model = ? AND attack = ? AND quantizer = ? "
               "AND settings_hash = ?" + (" AND error IS NULL" if retry_errors else ""))
        cur = self._conn.execute(sql, (model, attack, quantizer, settings_hash(settings)))
        return {r[0] for r in cur}

    def rows(self, *, model: str | None = None, attack: str | None = None,
             quantizer: str | None = None, settings: Mapping[str, Any] | None = None,
             run_id: str | None = None, with_errors: bool = True) -> list[dict[str, Any]]:
        """Rows as plain dicts (success as bool, extra decoded), in commit order; filters AND-ed."""
        cond, args = [], []
        for k, v in (("model", model), ("attack", attack), ("quantizer", quantizer), ("run_id", run_id)):
            if v is not None:
                cond.append(f"{k} = ?")
                args.append(v)
        if settings is not None:
            cond.append("settings_hash = ?")
            args.append(settings_hash(settings))
        if not with_errors:
            cond.append("error IS NULL")
        sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(cond) if cond else "") + " ORDER BY rowid"
        out = []
        for r in self._conn.execute(sql, args):
            d = dict(r)
            d["success"] = None if d["success"] is None else bool(d["success"])
            d["extra"] = None if d["extra"] is None else json.loads(d["extra"])
            out.append(d)
        return out

    def image_labels(self) -> list[tuple[str, int | None, str | None]]:
        """(image, label, label source) of each row without error, in commit order; the source is
        ``"file"`` or ``"model"`` (the model's prediction), None in rows that do not record it."""
        out = []
        for image, label, extra in self._conn.execute(
                "SELECT image, label, extra FROM results WHERE error IS NULL ORDER BY rowid"):
            source = json.loads(extra).get("label_source") if extra else None
            out.append((image, label, source))
        return out

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- export ---------------------------------------------------------------------------
    def export_csv(self, path: str | os.PathLike[str], **filters: Any) -> Path:
        """Write the (filtered, see :meth:`rows`) rows to CSV; ``extra`` as JSON. Returns the path."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            for r in self.rows(**filters):
                r["extra"] = None if r["extra"] is None else json.dumps(r["extra"], sort_keys=True)
                r["success"] = None if r["success"] is None else int(r["success"])
                w.writerow(r)
        return path

    def export_parquet(self, path: str | os.PathLike[str], **filters: Any) -> Path:
        """Write the (filtered) rows to Parquet with pyarrow. Returns the path.

        Raises ImportError naming ``pip install pyarrow`` when pyarrow is missing.
        """
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("Parquet export needs pyarrow: pip install pyarrow "
                              "(or export to CSV with export_csv)") from err
        types = {"TEXT": pa.string(), "INTEGER": pa.int64(), "REAL": pa.float64()}
        fields = [pa.field(k, pa.bool_() if k == "success" else types[t.split()[0]],
                           nullable="NOT NULL" not in t) for k, t in COLUMNS.items()]
        rows = self.rows(**filters)
        for r in rows:
            r["extra"] = None if r["extra"] is None else json.dumps(r["extra"], sort_keys=True)
        table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
        path = Path(path)
        pq.write_table(table, path)
        return path


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception, Ctrl-C included."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")

