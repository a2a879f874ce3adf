"""Benchmark report: operating-curve plots, the Table 6.2 summary and a self-contained HTML page.

Entry point, for the runner::

    files = write_report(run_dir, summaries, curves, gallery,
                         params_millions={"resnet50": 25.56}, black_box_attacks={"surfree"})

- ``summaries``: :class:`~advimage.bench.metrics.RobustnessSummary` per (model, attack, quantizer);
- ``curves``: ``{summary.key: OperatingCurve}`` (a summary without a curve gets no plot);
- ``gallery``: :class:`GalleryItem` (see :func:`example_item`) or plain ``(title, png)`` pairs,
  where an image is PNG/JPEG ``bytes`` or a path to such a file.

Everything goes to ``run_dir/report/`` (see :class:`ReportFiles`); ``report.html`` embeds its
images as base64 data URIs and needs no other file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from .metrics import OperatingCurve, RobustnessSummary

ImageSource = Union[bytes, str, os.PathLike]


# -- Table 6.2 ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRow:
    """One line of Table 6.2; distortions in pixel units, accuracy in [0, 1].

    Each side (white / black box) reports its worst-case attack and quantizer: the smallest
    *empirical* d_1/2 (where the measured eta crosses eta(0)/2, the primary number), ties broken
    by the fitted one. ``d_half_empirical_*`` is that attack's empirical d_1/2; ``d_half_*`` its
    fitted ``ln 2 / lambda`` (eq. 6.5, the name kept for compatibility); ``attack_*``, ``r2_*``
    and ``seconds_*`` belong to the same attack.
    """

    model: str
    params_millions: float | None
    accuracy: float
    n_images: int
    d_half_white: float | None = None
    d_half_black: float | None = None
    attack_white: str | None = None
    attack_black: str | None = None
    r2_white: float | None = None
    r2_black: float | None = None
    seconds_white: float | None = None
    seconds_black: float | None = None
    d_half_empirical_white: float | None = None
    d_half_empirical_black: float | None = None


def table_rows(summaries: Iterable[RobustnessSummary], *,
               black_box_attacks: Collection[str] = (),
               params_millions: Mapping[str, float] | None = None) -> list[ModelRow]:
    """Fold summaries into one :class:`ModelRow` per model (order of first appearance).

    An attack is black box when its name is in ``black_box_attacks``, white box otherwise.
    The worst case of a side is the attack with the smallest empirical d_1/2 (see :class:`ModelRow`).
    """
    by_model: dict[str, list[RobustnessSummary]] = {}
    for s in summaries:
        by_model.setdefault(s.model, []).append(s)
    out = []
    for model, ss in by_model.items():
        ref = max(ss, key=lambda s: s.n_images)
        side: dict[str, RobustnessSummary | None] = {}
        for name, black in (("white", False), ("black", True)):
            cand = [s for s in ss if (s.attack in black_box_attacks) == black
                    and not (math.isnan(s.d_half_empirical) and math.isnan(s.d_half_fit))]
            side[name] = min(cand, key=_worst_key) if cand else None
        w, b = side["white"], side["black"]
        out.append(ModelRow(
            model=model, params_millions=(params_millions or {}).get(model),
            accuracy=ref.accuracy, n_images=ref.n_images,
            d_half_white=_get(w, "d_half_fit"), d_half_black=_get(b, "d_half_fit"),
            attack_white=None if w is None else _label(w), attack_black=None if b is None else _label(b),
            r2_white=_get(w, "r2"), r2_black=_get(b, "r2"),
            seconds_white=_get(w, "seconds_per_image"), seconds_black=_get(b, "seconds_per_image"),
            d_half_empirical_white=_get(w, "d_half_empirical"), d_half_empirical_black=_get(b, "d_half_empirical")))
    return out


def _worst_key(s: RobustnessSummary) -> tuple[float, float]:
    """Sort key of the worst case: empirical d_1/2, then fitted (nan sorts last)."""
    nan_last = lambda x: math.inf if math.isnan(x) else x  # noqa: E731
    return (nan_last(s.d_half_empirical), nan_last(s.d_half_fit))


def _get(s: RobustnessSummary | None, attr: str) -> float | None:
    return None if s is None else getattr(s, attr)


def _label(s: RobustnessSummary) -> str:
    return s.attack if s.quantizer in ("", "none") else f"{s.attack} ({s.quantizer})"


def _num(x: float | None, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞"
    return format(x, fmt)


def _d(x: float | None) -> str:
    """d_1/2 as in the thesis: 2 decimals, 3 significant digits below 0.1."""
    if x is not None and not math.isinf(x) and not math.isnan(x) and 0 < abs(x) < 0.1:
        return format(x, ".2g")
    return _num(x, ".2f")


def _pair(a: float | None, b: float | None, fmt: str) -> str:
    return f"{_num(a, fmt)} / {_num(b, fmt)}"


TABLE_HEADER = ("Model", "Parameters (millions)", "Accuracy η(0) (%)", "d½ empirical, white box",
                "d½ empirical, black box", "d½ fit (white / black)", "R² of fit (white / black)",
                "s/image (white / black)")


def _table_cells(r: ModelRow) -> list[str]:
    return [r.model, _num(r.params_millions, ".2f"), _num(100 * r.accuracy, ".1f"),
            _d(r.d_half_empirical_white), _d(r.d_half_empirical_black),
            f"{_d(r.d_half_white)} / {_d(r.d_half_black)}", _pair(r.r2_white, r.r2_black, ".3f"),
            _pair(r.seconds_white, r.seconds_black, ".3g")]


def table_markdown(rows: Sequence[ModelRow]) -> str:
    """Table 6.2 as a GitHub Markdown table (d½ in pixel units, eq. 6.2 and 6.5).

    The empirical d½ (where the measured accuracy crosses η(0)/2) comes first; the fitted
    ``ln 2 / λ`` of eq. (6.4)-(6.5) and its R² follow.
    """
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(TABLE_HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in _table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("model", "params_millions", "accuracy", "n_images", "d_half_white", "d_half_black",
              "attack_white", "attack_black", "r2_white", "r2_black", "seconds_white", "seconds_black",
              "d_half_empirical_white", "d_half_empirical_black")


def write_table(rows: Sequence[ModelRow], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv`` (raw numbers, empty when undefined) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table.md"
    md.write_text(table_markdown(rows), encoding="utf-8")
    path = out / "table.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in rows:
            w.writerow(["" if getattr(r, k) is None else getattr(r, k) for k in CSV_FIELDS])
    return md, path


SUMMARY_FIELDS = ("model", "attack", "quantizer", "n_images", "accuracy", "lam", "d_half_fit", "r2",
                  "d_half_empirical", "n_fooled", "n_failed", "n_errors", "seconds_per_image", "note",
                  "d_half_unquantized", "r2_unquantized")


def write_summaries_csv(summaries: Sequence[RobustnessSummary], path: str | os.PathLike) -> Path:
    """One CSV line per summary, with ``success_at_<d>`` columns for each budget."""
    budgets = sorted({b for s in summaries for b in s.success_at})
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*SUMMARY_FIELDS, *(f"success_at_{b:g}" for b in budgets)])
        for s in summaries:
            vals = [getattr(s, k) for k in SUMMARY_FIELDS]
            w.writerow(["" if v is None else v for v in vals] + [s.success_at.get(b, "") for b in budgets])
    return path


# -- curves ------------------------------------------------------------------------------
def plot_curves(entries: Sequence[tuple[RobustnessSummary, OperatingCurve]], path_stem: str | os.PathLike,
                *, title: str = "", unquantized: Mapping[tuple[str, str, str], OperatingCurve] | None = None
                ) -> tuple[Path, Path]:
    """Operating curves P(d), one line per entry (e.g. the quantizers of one model and attack).

    Saved as PNG and SVG.

    Each measured curve is a step line; the fitted exponential ``1 - eta0 exp(-lam d)`` is
    dashed in the same colour and d_1/2 is marked where P = 1 - eta0/2. The right axis reads
    the accuracy eta = 1 - P. unquantized: ``{summary.key: curve}`` of the attacks' float
    outputs, drawn thin and grey for reference (what quantization costs). Returns (png, svg).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x_max = _x_max(entries)
    xs = np.linspace(0.0, x_max, 200)
    for i, (s, c) in enumerate(entries):
        color = f"C{i % 10}"
        d = np.append(c.d, x_max) if c.d[-1] < x_max else c.d
        p = np.append(c.p, c.p[-1]) if c.d[-1] < x_max else c.p
        label = (f"{_label(s)}: d½ {_d(s.d_half_empirical)} (empirical), fit d½={_d(s.d_half_fit)}, "
                 f"R²={_num(s.r2, '.3f')}")
        ax.step(d, p, where="post", color=color, lw=1.8, label=label)
        if s.lam > 0 and math.isfinite(s.lam):
            ax.plot(xs, 1 - s.accuracy * np.exp(-s.lam * xs), "--", color=color, lw=1.0)
        if math.isfinite(s.d_half_fit) and s.d_half_fit <= x_max:
            y = 1 - s.accuracy / 2
            ax.plot([s.d_half_fit, s.d_half_fit], [0, y], ":", color=color, lw=1.0)
            ax.plot([s.d_half_fit], [y], "o", color=color, ms=5)
        u = (unquantized or {}).get(s.key)
        if u is not None:
            du = np.append(u.d, x_max) if u.d[-1] < x_max else u.d
            pu = np.append(u.p, u.p[-1]) if u.d[-1] < x_max else u.p
            ax.step(du, pu, where="post", color="0.55", lw=1.0, alpha=0.9 if len(entries) == 1 else 0.5,
                    label=f"{s.attack} before quantization (floats): "
                          f"d½={_d(s.d_half_unquantized)}, R²={_num(s.r2_unquantized, '.3f')}")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("distortion d (eq. 6.2, pixel units)")
    ax.set_ylabel("success rate P(d)")
    ax.secondary_yaxis("right", functions=(lambda p: 1 - p, lambda e: 1 - e)).set_ylabel("accuracy η(d)")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, title=r"solid: measured, dashed: $\eta(0)e^{-\lambda d}$",
              title_fontsize=7)
    fig.tight_layout()
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, format="png", metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return png, svg


def _x_max(entries: Sequence[tuple[RobustnessSummary, OperatingCurve]]) -> float:
    m = 0.0
    for s, c in entries:
        e = c.effective[np.isfinite(c.effective)]
        if e.size:
            m = max(m, float(np.quantile(e, 0.99)))
        if math.isfinite(s.d_half_fit):
            m = max(m, 1.5 * s.d_half_fit)
    return 1.05 * m if m > 0 else 1.0


# -- gallery -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GalleryItem:
    """One gallery example: a title and panels ``(caption, image)`` shown side by side.

    image: PNG or JPEG bytes, or a path to such a file.
    """

    title: str
    panels: Sequence[tuple[str, ImageSource]] = field(default_factory=tuple)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image (H, W, 3), (3, H, W) or (H, W)."""
    return _png(_hwc(image))


def _hwc(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W, 3), (3, H, W) or (H, W), got shape {a.shape}")
    return a


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    if a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 255:
            raise ValueError("pixels must lie in [0, 255]")
        a = np.rint(a).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def amplify_perturbation(original: np.ndarray, adversarial: np.ndarray,
                         gain: float | None = None) -> tuple[np.ndarray, float]:
    """Perturbation shown as ``128 + gain * (adv - orig)``, uint8 (H, W, 3), and the gain used.

    gain: default maps the largest absolute difference to 127 (1 when images are equal).
    """
    x0, xa = _hwc(original).astype(np.float64), _hwc(adversarial).astype(np.float64)
    if x0.shape != xa.shape:
        raise ValueError(f"original {x0.shape} and adversarial {xa.shape} differ in shape")
    diff = xa - x0
    if gain is None:
        peak = float(np.abs(diff).max())
        gain = 127.0 / peak if peak > 0 else 1.0
    return np.clip(np.rint(128 + gain * diff), 0, 255).astype(np.uint8), float(gain)


def example_item(title: str, original: np.ndarray, adversarial: np.ndarray, *,
                 original_class: str, adversarial_class: str, gain: float | None = None) -> GalleryItem:
    """Gallery item ``original | adversarial | amplified perturbation`` from uint8 images.

    original, adversarial: uint8 pixels (H, W, 3) or (3, H, W); class names go in the captions.
    """
    pert, g = amplify_perturbation(original, adversarial, gain)
    return GalleryItem(title, (
        (f"original: {original_class}", _png(_hwc(original))),
        (f"adversarial: {adversarial_class}", _png(_hwc(adversarial))),
        (f"perturbation ×{g:.3g}", _png(pert)),
    ))


def _as_item(item: GalleryItem | tuple[str, ImageSource]) -> GalleryItem:
    if isinstance(item, GalleryItem):
        return item
    title, image = item
    return GalleryItem(str(title), (("", image),))


def data_uri(image: ImageSource) -> str:
    """``data:`` URI of PNG/JPEG/SVG bytes or of the file at a path."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    if data.startswith(b"\x89PNG"):
        mime = "image/png"
    elif data.startswith(b"\xff\xd8"):
        mime = "image/jpeg"
    elif data.lstrip()[:5] in (b"<?xml", b"<svg ") or b"<svg" in data[:1000]:
        mime = "image/svg+xml"
    else:
        raise ValueError("gallery images must be PNG, JPEG or SVG")
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# -- HTML --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`; ``curves`` holds (png, svg) per (model, attack)."""

    html: Path
    table_md: Path
    table_csv: Path
    summaries_csv: Path
    curves: dict[tuple[str, str], tuple[Path, Path]]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5rem;vertical-align:top}
figure img{display:block;max-width:100%;image-rendering:auto}
.curves img{width:560px}.gallery figure img{width:224px;image-rendering:pixelated}
figcaption{font-size:.85rem;color:#444;text-align:center;margin-top:.2rem}
.example{border:1px solid #e3e3e3;border-radius:6px;margin:.8rem 0;padding:.4rem}
.scroll{overflow-x:auto;max-width:100%}
table.detail{font-size:.78rem;width:100%}table.detail th{white-space:normal;vertical-align:bottom;
font-weight:600}table.detail th,table.detail td{padding:.2rem .3rem}table.detail td:last-child{min-width:8rem}
.example h3{font-size:1rem;margin:.2rem .5rem}.note{color:#666;font-size:.85rem}
"""


def _td(cells: Iterable[str], numeric_from: int = 1) -> str:
    return "".join(f'<td class="n">{html.escape(c)}</td>' if i >= numeric_from else f"<td>{html.escape(c)}</td>"
                   for i, c in enumerate(cells))


def _html_table(cls: str, header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{_td(r, numeric_from)}</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _slug(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def write_report(run_dir: str | os.PathLike, summaries: Sequence[RobustnessSummary],
                 curves: Mapping[tuple[str, str, str], OperatingCurve],
                 gallery: Sequence[GalleryItem | tuple[str, ImageSource]] = (), *,
                 params_millions: Mapping[str, float] | None = None,
                 black_box_attacks: Collection[str] = (), title: str = "advimage robustness report",
                 out_dir: str | os.PathLike | None = None,
                 unquantized: Mapping[tuple[str, str, str], OperatingCurve] | None = None) -> ReportFiles:
    """Write the report of a run; returns the paths written.

    run_dir: the run directory; files go to ``out_dir`` (default ``run_dir/report``).
    summaries: one per (model, attack, quantizer). curves: ``{summary.key: curve}``.
    gallery: :class:`GalleryItem` or ``(title, image)`` pairs (PNG/JPEG bytes or path).
    params_millions: ``{model: parameters in millions}`` for Table 6.2.
    black_box_attacks: names of the black-box attacks; all others count as white box.
    unquantized: ``{summary.key: curve}`` of white-box attacks' float outputs, overlaid on
    their plots for reference (Table 6.2 only ever uses the images).
    """
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(summaries, black_box_attacks=black_box_attacks, params_millions=params_millions)
    md, tcsv = write_table(rows, out)
    scsv = write_summaries_csv(summaries, out / "summaries.csv")

    groups: dict[tuple[str, str], list[tuple[RobustnessSummary, OperatingCurve]]] = {}
    for s in summaries:
        if s.key in curves:
            groups.setdefault((s.model, s.attack), []).append((s, curves[s.key]))
    used: set[str] = set()
    plots = {(m, a): plot_curves(ent, out / "curves" / _slug(f"{m}__{a}", used), title=f"{m} — {a}",
                                 unquantized=unquantized)
             for (m, a), ent in groups.items()}

    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">Run directory <code>{html.escape(Path(run_dir).name)}</code>, '
             f"generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}. Distortion d is eq. (6.2): "
             "‖x<sub>a</sub> − x<sub>o</sub>‖<sub>2</sub>/√n in pixel units [0, 255]; "
             "d½ empirical: where the measured accuracy η(d) crosses η(0)/2 (the primary number); "
             "d½ fit = ln2/λ from the fit η(d) = η(0)e<sup>−λd</sup> (eq. 6.4–6.5) on the curve's "
             "breakpoints, with its R².</p>",
             "<h2>Summary (Table 6.2 layout)</h2>",
             _html_table("summary", TABLE_HEADER, (_table_cells(r) for r in rows))]
    budgets = sorted({b for s in summaries for b in s.success_at})
    detail_head = ("Model", "Attack", "Quantizer", "Images", "η(0) %", "d½ empirical", "d½ fit", "R²", "λ",
                   *(f"P({b:g})" for b in budgets), "fooled", "failed", "errors", "s/image",
                   "d½ / R² of floats before quantization", "note")
    detail = ([s.model, s.attack, s.quantizer, str(s.n_images), _num(100 * s.accuracy, ".1f"),
               _d(s.d_half_empirical), _d(s.d_half_fit), _num(s.r2, ".3f"), _num(s.lam, ".3g"),
               *(_num(s.success_at.get(b), ".3f") for b in budgets), str(s.n_fooled), str(s.n_failed),
               str(s.n_errors), _num(s.seconds_per_image, ".3g"),
               f"{_d(s.d_half_unquantized)} / {_num(s.r2_unquantized, '.3f')}", s.note] for s in summaries)
    parts += ['<h2>Per attack</h2><div class="scroll">',
              _html_table("detail", detail_head, detail, numeric_from=3), "</div>"]
    if plots:
        parts.append('<h2>Operating curves</h2><div class="curves">')
        for (m, a), (png, _svg) in plots.items():
            cap = html.escape(f"{m} — {a}")
            parts.append(f'<figure><img src="{data_uri(png)}" alt="operating curve, {cap}">'
                         f"<figcaption>{cap}</figcaption></figure>")
        parts.append("</div>")
    items = [_as_item(g) for g in gallery]
    if items:
        parts.append('<h2>Gallery</h2><div class="gallery">')
        for it in items:
            figs = "".join(f'<figure><img src="{data_uri(img)}" alt="{html.escape(cap or it.title)}">'
                           f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, img in it.panels)
            parts.append(f'<div class="example"><h3>{html.escape(it.title)}</h3>{figs}</div>')
        parts.append("</div>")
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
           + "\n".join(parts) + "\n</body></html>\n")
    page = out / "report.html"
    page.write_text(doc, encoding="utf-8")
    return ReportFiles(html=page, table_md=md, table_csv=tcsv, summaries_csv=scsv, curves=plots)
