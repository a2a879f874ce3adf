"""``advimage analyze class-vectors``: Tables 5.2–5.4 and 9.3 for any models, as CSV, Markdown and heat maps."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from .class_vectors import MEASURES, NormStatistics, class_vectors, correlation_table, cosine_matrix, norm_statistics


def parse_classes(text: str) -> tuple[int, ...]:
    """``"182,184-186"`` -> (182, 184, 185, 186); empty text -> ()."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"bad class range {part!r}: the end is before the start")
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"bad class list {text!r}: expected indices and ranges like 182,184-189")
    return tuple(out)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _write_matrix_csv(path: Path, m: Tensor, rows: Sequence[int], cols: Sequence[int]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class"] + list(cols))
        for i, r in enumerate(rows):
            w.writerow([r] + [f"{float(v):.6f}" for v in m[i]])


def _md_matrix(m: Tensor, rows: Sequence[int], cols: Sequence[int]) -> list[str]:
    lines = ["| label # | " + " | ".join(str(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for i, r in enumerate(rows):
        lines.append(f"| {r} | " + " | ".join(f"{float(v):.2f}" for v in m[i]) + " |")
    return lines


def _md_pairs(table: dict[str, dict[str, float]]) -> list[str]:
    """Upper triangle, as Table 9.3."""
    names = list(table)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, a in enumerate(names):
        cells = ["" if j < i else f"{table[a][b]:.2f}" for j, b in enumerate(names)]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def heatmap(path: Path, m: Tensor, rows: Sequence, cols: Sequence, title: str, vmin: float = -1.0,
            vmax: float = 1.0, annotate: bool = True) -> Path:
    """A matrix as a PNG heat map (diverging colours, values printed in the cells when small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = m.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * w, 1.0 + 0.6 * h))
    im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(w), [str(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(h), [str(r) for r in rows])
    if annotate and h * w <= 400:
        for i in range(h):
            for j in range(w):
                v = float(m[i, j])
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v - (vmin + vmax) / 2) > 0.35 * (vmax - vmin) else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def analyze_class_vectors(models: dict[str, nn.Module], out: Path, classes: Sequence[int] = (),
                          against: Sequence[int] = (), plots: bool = True) -> dict:
    """Write Table 5.2 (``norms.csv``), the Cω blocks (``cosine_<model>.csv``, ``cosine_<model>_against.csv``,
    heat maps), Table 9.3 for every pair of ``models`` and every measure (``correlation.csv``,
    ``correlation_<measure>.png``), ``report.md`` and ``summary.json`` under ``out``; return the summary.

    models: name -> a classifier (its last linear layer is read, see :func:`class_vectors`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats: list[NormStatistics] = []
    full: dict[str, Tensor] = {}
    blocks: dict[str, dict] = {}
    for name, model in models.items():
        w, b = class_vectors(model)
        stats.append(norm_statistics(w, b, model=name))
        full[name] = cosine_matrix(w)
        entry: dict = {}
        if classes:
            block = cosine_matrix(w, classes, classes)
            _write_matrix_csv(out / f"cosine_{_slug(name)}.csv", block, classes, classes)
            entry["classes"] = block.tolist()
            if plots:
                heatmap(out / f"cosine_{_slug(name)}.png", block, classes, classes, f"Cω, {name}")
        if classes and against:
            block = cosine_matrix(w, against, classes)
            _write_matrix_csv(out / f"cosine_{_slug(name)}_against.csv", block, against, classes)
            entry["against"] = block.tolist()
            if plots:
                heatmap(out / f"cosine_{_slug(name)}_against.png", block, against, classes, f"Cω, {name}")
        blocks[name] = entry
    with open(out / "norms.csv", "w", newline="") as fh:
        keys = list(stats[0].to_dict()) if stats else []
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for s in stats:
            writer.writerow(s.to_dict())
    tables = {m: correlation_table(full, m) for m in MEASURES} if len(full) > 1 else {}
    names = list(full)
    with open(out / "correlation.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["model_a", "model_b"] + list(MEASURES))
        for i, a in enumerate(names):
            for bname in names[i + 1:]:
                wr.writerow([a, bname] + [f"{tables[m][a][bname]:.6f}" for m in MEASURES])
    if plots and tables:
        for m, t in tables.items():
            mat = torch.tensor([[t[a][b] for b in names] for a in names])
            heatmap(out / f"correlation_{m}.png", mat, names, names, f"Cω agreement ({m})", vmin=-1, vmax=1)
    summary = {"models": names, "classes": list(classes), "against": list(against),
               "norms": [s.to_dict() for s in stats], "cosine_blocks": blocks, "correlation": tables}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown(summary))
    return summary


def markdown(s: dict) -> str:
    """Table 5.2, then Tables 5.3/5.4 per model, then Table 9.3 per measure."""
    lines = ["Class vectors ω^k: rows of the last fully-connected layer (thesis §5.2.3).", "",
             "Table 5.2: norms ‖ω^k‖ (std with ddof 0); the bias b_k is not in the thesis's table.", "",
             "| model | C | n_f | mean | std | min | max | bias mean | bias std | bias min | bias max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for n in s["norms"]:
        lines.append(f"| {n['model']} | {n['classes']} | {n['n_f']} | {n['mean']:.2f} | {n['std']:.2f} | "
                     f"{n['min']:.2f} | {n['max']:.2f} | {fmt(n['bias_mean'])} | {fmt(n['bias_std'])} | "
                     f"{fmt(n['bias_min'])} | {fmt(n['bias_max'])} |")
    for name, entry in s["cosine_blocks"].items():
        if "classes" in entry:
            lines += ["", f"Cω = cos(ω^k, ω^l) among classes {', '.join(map(str, s['classes']))} "
                      f"(Table 5.3 layout), {name}:", ""]
            lines += _md_matrix(torch.tensor(entry["classes"]), s["classes"], s["classes"])
        if "against" in entry:
            lines += ["", f"Cω between classes {', '.join(map(str, s['against']))} and the same (Table 5.4 layout), "
                      f"{name}:", ""]
            lines += _md_matrix(torch.tensor(entry["against"]), s["against"], s["classes"])
    for m, t in s["correlation"].items():
        lines += ["", f"Table 9.3 layout: agreement of the models' Cω ({s['norms'][0]['classes']} classes), "
                  f"measure `{m}`:", ""]
        lines += _md_pairs(t)
    return "\n".join(lines) + "\n"
