"""How much d½ and R² depend on the fit's conventions, and why the image curves are not exponential.

Reads finished run folders without modifying them: an ``advimage bench`` run (``results.csv``, else
``results.sqlite`` opened read-only) or a ``quant-table`` experiment folder (``rows.json`` of engine
rows and its ``summary.json``). For every (model, attack, quantizer) curve, and for the attack's
floats before quantization where the rows carry them, it reports:

- the empirical d½ (where the measured accuracy crosses η(0)/2, linear between samples);
- the fitted d½ = ln2/λ (eq. 6.5) and R² under the four conventions of
  :func:`advimage.bench.metrics.fit_exponential`: amplitude pinned to η(0) or fitted, samples at
  the curve's breakpoints or on a uniform grid of 200 distortions from 0 to the largest finite one
  (for a fitted amplitude A, ``cross`` is where the model reaches η(0)/2: ln(2A/η(0))/λ).

Then, per image quantized successfully from a successful float attack, the ratio
file distortion / float distortion (``distortion`` / ``extra.attack_distortion``), binned by float
distortion into quantile bins: a table (bin range, n, median ratio, median file distortion) and a
PNG (scatter + binned median). An affine least-squares fit file ≈ a + b·float over those images
tells an offset (a > 0: a distortion every file pays) from a scale; the float curve mapped through it
(effective distortion a + b·e for fooled images, misclassified and failed ones unchanged) shows how
much of the image curve's shape and R² the map alone explains.

Usage: python studies/fit_conventions.py RUN_DIR [RUN_DIR ...] [--bins 6]
       [--out studies/out/fit_conventions.json] [--plot studies/out/fit_ratio.png]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np

from advimage.bench.metrics import (
    OperatingCurve,
    curve_from_rows,
    empirical_half_distortion,
    fit_conventions,
    group_rows,
    unquantized_curve_from_rows,
)


# -- reading run folders (read-only) -----------------------------------------------------
def _store_row(r: dict[str, Any]) -> dict[str, Any]:
    """A results.csv / results.sqlite row with typed fields (extra decoded)."""
    out = dict(r)
    for k in ("label", "prediction", "adv_label"):
        out[k] = None if r.get(k) in (None, "") else int(r[k])
    out["distortion"] = None if r.get("distortion") in (None, "") else float(r["distortion"])
    out["success"] = None if r.get("success") in (None, "") else bool(int(r["success"]))
    out["error"] = r.get("error") or None
    ex = r.get("extra")
    out["extra"] = json.loads(ex) if isinstance(ex, str) and ex else (ex or {})
    return out


def _engine_row(r: dict[str, Any], model: str, attack: str) -> dict[str, Any]:
    """An engine row of a quant-table ``rows.json`` in the store's layout (see ``runner.worker_batch``)."""
    mis = r["status"] == "misclassified"
    return {"model": model, "attack": attack, "quantizer": r["quantizer"], "image": r["key"],
            "label": r["label"], "prediction": r.get("original_prediction"),
            "distortion": 0.0 if mis else r.get("distortion"), "success": mis or r["status"] == "fooled",
            "error": r.get("error") if r["status"] == "error" else None,
            "extra": {} if mis else {"attack_distortion": r.get("attack_distortion"),
                                     "attack_success": r.get("attack_success")}}


def read_run(run: Path) -> tuple[str, list[dict[str, Any]]]:
    """(kind of store, rows) of a run folder; raises ValueError when it holds no known store."""
    if (run / "results.csv").is_file():
        with open(run / "results.csv", newline="", encoding="utf-8") as f:
            return "results.csv", [_store_row(r) for r in csv.DictReader(f)]
    if (run / "results.sqlite").is_file():
        con = sqlite3.connect(f"{(run / 'results.sqlite').resolve().as_uri()}?immutable=1", uri=True)
        con.row_factory = sqlite3.Row
        try:
            return "results.sqlite", [_store_row(dict(r)) for r in con.execute("SELECT * FROM results ORDER BY rowid")]
        finally:
            con.close()
    if (run / "rows.json").is_file() and (run / "summary.json").is_file():
        meta = json.loads((run / "summary.json").read_text())
        if "model" not in meta or "attack" not in meta:
            raise ValueError(f"{run}: rows.json without model/attack in summary.json")
        rows = json.loads((run / "rows.json").read_text())
        if not rows or "status" not in rows[0] or "attack_distortion" not in rows[0]:
            raise ValueError(f"{run}: rows.json does not hold engine rows")
        return "rows.json (engine rows)", [_engine_row(r, meta["model"], meta["attack"]) for r in rows]
    raise ValueError(f"{run}: no results.csv, results.sqlite or engine rows.json")


# -- fits ----------------------------------------------------------------------------------
def curve_entry(curve, label: str) -> dict[str, Any]:
    fits = fit_conventions(curve)
    return {"curve": label, "n_images": curve.n_images, "accuracy": curve.accuracy,
            "d_half_empirical": empirical_half_distortion(curve),
            "fits": {k: None if f is None else {"eta0": f.eta0, "lam": f.lam, "d_half": f.d_half,
                                                 "d_half_crossing": f.d_half_crossing, "r2": f.r2,
                                                 "n_samples": f.n_samples}
                     for k, f in fits.items()}}


def ratios(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(float distortion, file / float) of images whose float attack and file both succeeded."""
    fl, ra = [], []
    for r in rows:
        ex = r.get("extra") or {}
        if r.get("error") or (r.get("quantizer") or "none") == "none" or not r.get("success"):
            continue
        a, d = ex.get("attack_distortion"), r.get("distortion")
        if not ex.get("attack_success") or a is None or d is None or not a > 0:
            continue
        fl.append(float(a))
        ra.append(float(d) / float(a))
    return np.asarray(fl), np.asarray(ra)


def binned(fl: np.ndarray, ra: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Quantile bins of the float distortion: range, n, median / quartiles of the ratio, median file d."""
    edges = np.quantile(fl, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, fl, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "median_ratio": float(np.median(ra[m])), "q25_ratio": float(np.quantile(ra[m], 0.25)),
                    "q75_ratio": float(np.quantile(ra[m], 0.75)),
                    "median_float": float(np.median(fl[m])), "median_file": float(np.median(fl[m] * ra[m]))})
    return out


def affine(fl: np.ndarray, ra: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares line file distortion = a + b * float distortion."""
    b, a = np.polyfit(fl, fl * ra, 1)
    return float(a), float(b)


def mapped_curve(curve: OperatingCurve, a: float, b: float) -> OperatingCurve:
    """The float curve with every fooled image's distortion e > 0 replaced by a + b e."""
    e = curve.effective
    m = np.isfinite(e) & (e > 0)
    e2 = np.where(m, a + b * np.where(m, e, 0.0), e)
    d = np.unique(np.concatenate([[0.0], e2[np.isfinite(e2)]]))
    p = np.searchsorted(np.sort(e2), d, side="right") / e2.size
    return OperatingCurve(d=d, p=p.astype(np.float64), effective=e2)


def plot(groups: list[tuple[str, np.ndarray, np.ndarray, list[dict[str, float]], tuple[float, float]]],
         path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, fl, ra, bs, (off, slope)) in enumerate(groups):
        c = f"C{i % 10}"
        xs = np.geomspace(np.quantile(fl, 0.05), fl.max(), 100)  # the range the line was fitted on, tails aside
        ax.plot(xs, off / xs + slope, "--", color=c, lw=1.0,
                label=f"{name}: file d = {off:.3f} + {slope:.2f} × float d")
        ax.scatter(fl, ra, s=10, alpha=0.5, color=c, label=f"{name}: images (n={fl.size})")
        ax.plot([b["median_float"] for b in bs], [b["median_ratio"] for b in bs], "-o", color=c, lw=1.8, ms=5,
                label=f"{name}: median per quantile bin")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("float distortion of the attack (eq. 6.2, pixel units)")
    ax.set_ylabel("file distortion / float distortion")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Cost of quantization per image")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})


def _f(x: float | None, fmt: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "inf" if math.isinf(x) else format(x, fmt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--bins", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("studies/out/fit_conventions.json"))
    p.add_argument("--plot", type=Path, default=Path("studies/out/fit_ratio.png"))
    args = p.parse_args()
    report: dict[str, Any] = {"command": "python studies/fit_conventions.py "
                              + " ".join(sys.argv[1:]), "runs": []}
    plotted = []
    conv = ("pinned/breakpoints", "pinned/uniform", "fitted/breakpoints", "fitted/uniform")
    print("| run | model | attack | quantizer | curve | n | η(0) | d½ empirical | "
          + " | ".join(f"d½ / R² {c}" for c in conv) + " |")
    print("|---|---|---|---|---|--:|--:|--:|" + "--:|" * len(conv))
    for run in args.runs:
        if not run.is_dir():
            print(f"skipped {run}: missing", file=sys.stderr)
            report["runs"].append({"run": str(run), "skipped": "missing"})
            continue
        try:
            kind, rows = read_run(run)
        except ValueError as err:
            print(f"skipped {run}: {err}", file=sys.stderr)
            report["runs"].append({"run": str(run), "skipped": str(err)})
            continue
        entry: dict[str, Any] = {"run": str(run), "store": kind, "rows": len(rows), "curves": [], "ratios": []}
        for (m, a, q), rs in group_rows(rows).items():
            ok = [r for r in rs if not r.get("error")]
            if not ok:
                continue
            curves = [("images" if q not in ("", "none") else "floats (not quantized)", curve_from_rows(ok))]
            u = unquantized_curve_from_rows(ok)
            if u is not None:
                curves.append(("floats before quantization", u))
            for label, c in curves:
                e = curve_entry(c, label)
                e.update(model=m, attack=a, quantizer=q)
                entry["curves"].append(e)
                cells = []
                for k in conv:
                    f = e["fits"][k]
                    cells.append("-" if f is None else
                                 f"{_f(f['d_half'])} / {_f(f['r2'])}"
                                 + ("" if k.startswith("pinned") else f" (A {_f(f['eta0'], '.2f')}, "
                                                                      f"cross {_f(f['d_half_crossing'])})"))
                print(f"| {run.name} | {m} | {a} | {q} | {label} | {e['n_images']} | {100 * e['accuracy']:.1f}% | "
                      f"{_f(e['d_half_empirical'])} | " + " | ".join(cells) + " |")
            fl, ra = ratios(ok)
            if fl.size >= args.bins:
                bs = binned(fl, ra, args.bins)
                off, slope = affine(fl, ra)
                g = {"model": m, "attack": a, "quantizer": q, "n": int(fl.size),
                     "median_ratio": float(np.median(ra)), "ratio_float_spearman": _spearman(fl, ra),
                     "affine_offset": off, "affine_slope": slope, "bins": bs,
                     "per_image": {"float": fl.tolist(), "ratio": ra.tolist()}}
                if u is not None:
                    mc = mapped_curve(u, off, slope)
                    g["floats_mapped"] = curve_entry(mc, "floats mapped by the affine fit")
                entry["ratios"].append(g)
                plotted.append((f"{run.name} {m} {a} ({q})", fl, ra, bs, (off, slope)))
        report["runs"].append(entry)
    for entry in report["runs"]:
        for g in entry.get("ratios", []):
            print(f"\n{Path(entry['run']).name}, {g['model']} {g['attack']} ({g['quantizer']}): file / float "
                  f"distortion, {g['n']} images, median {g['median_ratio']:.2f}, Spearman ρ(float d, ratio) "
                  f"{g['ratio_float_spearman']:.2f}; affine fit: file d = {g['affine_offset']:.4f} + "
                  f"{g['affine_slope']:.3f} × float d")
            if "floats_mapped" in g:
                fm = g["floats_mapped"]
                f0, f1 = fm["fits"]["pinned/breakpoints"], fm["fits"]["fitted/uniform"]
                print(f"floats mapped through that line: d½ empirical {_f(fm['d_half_empirical'])}, "
                      f"pinned/breakpoints d½ {_f(f0 and f0['d_half'])} R² {_f(f0 and f0['r2'])}, "
                      f"fitted/uniform d½ {_f(f1 and f1['d_half'])} R² {_f(f1 and f1['r2'])}")
            print("| float d bin | n | median ratio (IQR) | median float d | median file d |")
            print("|---|--:|--:|--:|--:|")
            for b in g["bins"]:
                print(f"| {b['lo']:.3f}-{b['hi']:.3f} | {b['n']} | {b['median_ratio']:.2f} "
                      f"({b['q25_ratio']:.2f}-{b['q75_ratio']:.2f}) | {b['median_float']:.3f} | "
                      f"{b['median_file']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if plotted:
        plot(plotted, args.plot)
        print(f"\nwrote {args.out} and {args.plot}")
    else:
        print(f"\nwrote {args.out} (no quantized rows: no plot)")


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


if __name__ == "__main__":
    main()
