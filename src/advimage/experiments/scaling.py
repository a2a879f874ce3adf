"""Image scale (thesis Ch. 9): Scenario B attacks through the six downscalers of §9.3, their
transferability (Table 9.2), ensemble attacks (Table 9.1, §9.4.5) and the random-resize defense
(§9.5); Fig. 9.2 (Scenario A, distortion against input size) is in :mod:`.scaling_fig92`.

Protocol (§9.2-9.3): each image's largest centre square is resized to 600×600 with Pillow's
bilinear filter (the thesis used OpenCV's ``INTER_LINEAR``; OpenCV is not a dependency, and
Pillow's bilinear is antialiased when it shrinks) and written as a PNG: these *base images* are
the originals. The classifier is a downscaler D (600 → ℓ, the whole image: ``crop_pct`` 1) and
the model; the attack perturbs the 600×600 image with gradients through Dᵀ (eq. 9.5).

Every attack runs through the engine (:func:`advimage.engine.run_batch`, native size): BP
best-effort, ``steps`` gradients in all, and two outputs of the same attack: the floats
(quantizer ``none``) and the PNG (smart quantization at 600×600, decoded back). Each output is then
classified through each of the six downscalers. An *attack config* is one downscaler name
(attack through it alone) or ``ens-avg`` / ``ens-worst`` / ``ens-max`` (the ensemble of the six,
gradients aggregated as named, success only when all six are fooled).

Output folder (shared by the subcommands, so that they reuse each other's attacks):
``bases/`` (the 600×600 originals), ``results.sqlite`` (the one result store,
:class:`advimage.bench.store.ResultStore`: one row per image and attack config, committed as
batches finish: ``--resume`` skips them; a store made with another model, steps, seed, base size
or quantizer is refused) with ``settings.json`` (the latest run's), and ``attacks/<config>/<stem>.png``
(the files); then per subcommand a CSV, a Markdown table, a plot and a JSON summary, computed from
the stored rows. Folders of earlier versions (``attacks/<config>/rows.jsonl``) are imported into
the store when resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..bench.store import DB_NAME, ResultStore, SettingsMismatch
from ..cli_support import fail
from ..codec import decode, write_atomic
from ..data import ImageItem, check_labels, discover
from ..engine import Settings, run_batch
from ..images import read_pil
from ..resize import DOWNSCALERS
from .registry import experiment

BASE_SIZE = 600
ENSEMBLES = ("ens-avg", "ens-worst", "ens-max")
#: quantizers whose files are 8-bit PNGs (choices of ``--quantize``)
PNG_QUANTIZERS = ("smart", "scaled", "smart-prune", "scaled-prune", "lattice", "lattice-prox", "lattice-int")
LABELS = {"nearest": "Near", "bilinear": "Bil", "bicubic": "Bic", "area": "Area", "bilag": "BilAg",
          "bilg": "BilG", "ens-avg": "Ens-Avg", "ens-worst": "Ens-Worst", "ens-max": "Ens-Max"}
TABLE92_ORDER = ("bilinear", "bicubic", "area", "nearest", "bilg", "bilag")  # the thesis's column order

#: Thesis Table 9.2 (EfficientNet-b0, 600 → 224): accuracy %, THESIS_92[defense][attack].
THESIS_92 = {
    "bilinear": {"bilinear": 0.7, "bicubic": 70.7, "area": 74.6, "nearest": 75.1, "bilg": 73.5, "bilag": 8.2},
    "bicubic": {"bilinear": 5.6, "bicubic": 0.9, "area": 75.6, "nearest": 75.9, "bilg": 74.1, "bilag": 9.6},
    "area": {"bilinear": 72.8, "bicubic": 72.8, "area": 0.3, "nearest": 72.8, "bilg": 69.8, "bilag": 71.9},
    "nearest": {"bilinear": 75.6, "bicubic": 75.6, "area": 35.5, "nearest": 0.8, "bilg": 69.4, "bilag": 75.6},
    "bilg": {"bilinear": 73.4, "bicubic": 73.5, "area": 72.6, "nearest": 73.4, "bilg": 0.5, "bilag": 72.2},
    "bilag": {"bilinear": 74.0, "bicubic": 73.9, "area": 73.2, "nearest": 75.0, "bilg": 72.2, "bilag": 0.7},
}
#: Thesis Table 9.1 (EfficientNet b0-b2): RMSE at 90% success.
THESIS_91 = {"b0 (224)": (0.15, 0.39, 0.54, 0.53), "b1 (240)": (0.16, 0.37, 0.56, 0.47),
             "b2 (260)": (0.17, 0.37, 0.47, 0.49)}


# -- base images -----------------------------------------------------------------------------
def base_image(path: Path, size: int = BASE_SIZE) -> Any:
    """The largest centre square of an image, resized to ``size``×``size`` with Pillow's bilinear
    filter (a PIL image, 8-bit RGB)."""
    from PIL import Image

    img = read_pil(path)
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR)


def prepare_bases(items: list[ImageItem], folder: Path, size: int = BASE_SIZE) -> list[ImageItem]:
    """Write each item's base image as ``folder/<stem>.png`` (kept if already there); returns the
    base items with the originals' labels. Unreadable originals are skipped with a warning."""
    import io

    from ..images import ImageReadError

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for it in items:
        target = folder / f"{it.stem}.png"
        if not target.is_file():
            try:
                img = base_image(it.path, size)
            except ImageReadError as exc:
                print(f"warning: skipped {it.path}: {exc}")
                continue
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            write_atomic(target, buf.getvalue())
        out.append(ImageItem(target, it.label))
    return out


# -- classification through each downscaler ---------------------------------------------------
class MemberPanel:
    """The model behind each of the six downscalers (whole image, ``crop_pct`` 1), each the
    differentiable front of its pipeline (:mod:`advimage.pipelines`), as the engine attacks it."""

    def __init__(self, model: Any, methods: tuple[str, ...] = DOWNSCALERS) -> None:
        from ..engine import single_pipeline

        self.methods = methods
        self.members = {m: single_pipeline(model, m, crop_pct=1.0) for m in methods}
        self.device = model.device

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 8) -> dict[str, list[int]]:
        """Classes per member, x: float (N, 3, H, W) pixels."""
        out = {}
        for m, clf in self.members.items():
            preds = [clf(x[i:i + batch_size].to(self.device)).argmax(1) for i in range(0, len(x), batch_size)]
            out[m] = torch.cat(preds).tolist()
        return out


# -- attack runs -----------------------------------------------------------------------------
@dataclass
class AttackRow:
    """One base image attacked with one config; verdicts through every downscaler."""

    image: str
    label: int
    config: str
    status: str                                    # engine status of the PNG (fooled|failed|misclassified|error)
    clean: dict[str, bool] = field(default_factory=dict)        # member -> original correctly classified
    float_distortion: float | None = None
    float_success: bool | None = None              # the floats fool the attacked classifier
    float_fooled: dict[str, bool] = field(default_factory=dict)  # member -> the floats misclassified
    file_distortion: float | None = None
    file_fooled: dict[str, bool] = field(default_factory=dict)   # member -> the decoded PNG misclassified
    gradients: int = 0
    seconds: float = 0.0
    error: str | None = None


def engine_settings(config: str, steps: int, seed: int, quantizer: str = "smart") -> Settings:
    """The engine's settings of an attack config (a downscaler name or an ``ens-*`` ensemble); the
    floats and the files of ``quantizer`` (a PNG quantizer) are both kept."""
    common = dict(attack="bp", steps=steps, quantizers=("none", quantizer), size="native", victim="pil",
                  margin=0.0, crop_pct=1.0, seed=seed)
    if config in ENSEMBLES:
        return Settings(ensemble=config[len("ens-"):], **common)
    if config not in DOWNSCALERS:
        raise ValueError(f"unknown attack config {config!r}; valid: {', '.join(DOWNSCALERS + ENSEMBLES)}")
    return Settings(downscaler=config, **common)


#: what a folder's runs must share to reuse each other's rows (``--resume``)
RUN_KEYS = ("experiment", "model", "steps", "seed", "base_size", "quantizer")
ATTACK = "bp"  # the ``attack`` column of the stored rows (the config is in their settings and ``extra``)
_EXTRA = ("config", "status", "clean", "float_distortion", "float_success", "float_fooled", "file_fooled")


def run_settings(model_name: str, steps: int, seed: int, base_size: int = BASE_SIZE, quantizer: str = "smart",
                 **more: Any) -> dict[str, Any]:
    """A run's settings as recorded in the store (:data:`RUN_KEYS`, and ``more``: configs, limit)."""
    return {"experiment": "scaling", "model": model_name, "steps": steps, "seed": seed, "base_size": base_size,
            "quantizer": quantizer, **more}


def row_settings(config: str, steps: int, seed: int, quantizer: str = "smart",
                 base_size: int = BASE_SIZE) -> dict[str, Any]:
    """The settings hashed into a stored row's key: the engine's identity of the attack config and
    the side of the base images."""
    return {"experiment": "scaling", "config": config, "base_size": base_size,
            "engine": engine_settings(config, steps, seed, quantizer).identity()}


def _to_store(row: AttackRow, model_name: str, quantizer: str) -> dict[str, Any]:
    """An :class:`AttackRow` as a store row (the PNG's distortion and verdict in the common columns)."""
    return {"model": model_name, "attack": ATTACK, "quantizer": quantizer, "image": row.image, "label": row.label,
            "distortion": row.file_distortion, "success": row.status in ("fooled", "misclassified"),
            "gradients": row.gradients, "seconds": row.seconds, "error": row.error,
            "extra": {k: getattr(row, k) for k in _EXTRA}}


def _from_store(r: dict[str, Any]) -> AttackRow:
    return AttackRow(image=r["image"], label=r["label"], file_distortion=r["distortion"], gradients=r["gradients"],
                     seconds=r["seconds"], error=r["error"], **{k: r["extra"][k] for k in _EXTRA})


def _legacy_path(out: Path, config: str) -> Path:
    """Where earlier versions kept a config's rows (one JSON object per line)."""
    return out / "attacks" / config / "rows.jsonl"


def _legacy_rows(out: Path, config: str) -> list[AttackRow]:
    path = _legacy_path(out, config)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(AttackRow(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut by an interruption: that image is redone
    return rows


def load_rows(out: Path, config: str, settings: dict[str, Any] | None = None) -> list[AttackRow]:
    """The stored rows of an attack config in ``out`` (commit order), of the row settings
    ``settings`` (:func:`row_settings`) if given; a folder of an earlier version: its ``rows.jsonl``."""
    if not (out / DB_NAME).is_file():
        return _legacy_rows(out, config)
    with ResultStore(out) as store:
        rows = store.rows(attack=ATTACK, settings=settings)
    return [_from_store(r) for r in rows if r["extra"] and r["extra"].get("config") == config]


def attack_config(model: Any, panel: MemberPanel, bases: list[ImageItem], out: Path, config: str, *, steps: int,
                  seed: int, batch_size: int, bar: Any = None, task: Any = None,
                  quantizer: str = "smart", base_size: int = BASE_SIZE,
                  store: ResultStore | None = None) -> list[AttackRow]:
    """Attack the base images not yet stored for this config in ``out``'s store (``store``, or the
    folder's, opened here); commit their rows batch by batch; returns the config's stored rows."""
    from ..engine import attacked_model

    name = str(model.config.name)
    if store is None:
        with ResultStore(out) as own:
            own.refuse_other_settings(run_settings(name, steps, seed, base_size, quantizer), RUN_KEYS)
            own.start_run(run_settings(name, steps, seed, base_size, quantizer, configs=[config]), seed=seed)
            return attack_config(model, panel, bases, out, config, steps=steps, seed=seed, batch_size=batch_size,
                                 bar=bar, task=task, quantizer=quantizer, base_size=base_size, store=own)
    settings = engine_settings(config, steps, seed, quantizer)
    keyed = row_settings(config, steps, seed, quantizer, base_size)
    folder = out / "attacks" / config
    folder.mkdir(parents=True, exist_ok=True)
    done = store.done(name, ATTACK, quantizer, keyed)
    legacy = _legacy_rows(out, config) if not done else []
    if legacy:  # a folder of an earlier version, resumed: its rows join the store once
        store.add_batch([_to_store(r, name, quantizer) for r in legacy], settings=keyed)
        done = store.done(name, ATTACK, quantizer, keyed)
    todo = [b for b in bases if b.path.name not in done]
    if bar is not None:
        bar.update(task, completed=len(bases) - len(todo))
    attacked = attacked_model(model, settings)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        t0 = time.perf_counter()
        rows = run_batch(model, batch, settings, attacked=attacked)
        seconds = (time.perf_counter() - t0) / len(batch)
        new = [_attack_row(model, panel, it, rows[2 * j], rows[2 * j + 1], config, seconds, folder)
               for j, it in enumerate(batch)]
        store.add_batch([_to_store(r, name, quantizer) for r in new], settings=keyed)
        if bar is not None:
            bar.update(task, advance=len(batch))
    return [_from_store(r) for r in store.rows(model=name, attack=ATTACK, quantizer=quantizer, settings=keyed)]


def _attack_row(model: Any, panel: MemberPanel, item: ImageItem, floats: Any, png: Any, config: str,
                seconds: float, folder: Path) -> AttackRow:
    row = AttackRow(image=item.path.name, label=int(png.label if png.label is not None else -1), config=config,
                    status=png.status, seconds=seconds, error=png.error)
    if png.status == "error":
        return row
    x0 = decode(item.path.read_bytes(), ".png").float()[None]
    clean = panel.predict(x0)
    row.clean = {m: clean[m][0] == row.label for m in panel.methods}
    if png.status == "misclassified" or png.data is None:  # not attacked: the original itself
        row.float_distortion = row.file_distortion = 0.0
        row.float_success = True
        row.float_fooled = row.file_fooled = {m: not ok for m, ok in row.clean.items()}
        return row
    xf = decode(floats.data, ".npy").float()[None]
    xq = decode(png.data, ".png").float()[None]
    pf, pq = panel.predict(xf), panel.predict(xq)
    row.float_distortion = floats.attack_distortion
    row.float_success = floats.attack_success
    row.float_fooled = {m: pf[m][0] != row.label for m in panel.methods}
    row.file_distortion = png.distortion
    row.file_fooled = {m: pq[m][0] != row.label for m in panel.methods}
    row.gradients = png.gradients
    write_atomic(folder / f"{item.stem}.png", png.data)
    return row


def run_configs(images: list[str], out: Path, configs: list[str], *, model_name: str = "efficientnet_lite0",
                steps: int = 50, limit: int | None = 100, seed: int = 0, batch_size: int = 4,
                device: str | None = None, progress: bool = True,
                base_size: int = BASE_SIZE, quantizer: str = "smart") -> dict[str, list[AttackRow]]:
    """Base images (``base_size``², 600 in the thesis) of the first ``limit`` images, then every
    attack config (resumable)."""
    from ..models import load_model
    from ..progress import progress_bar

    model = load_model(model_name, device=device)
    items = discover(images)
    items = items[:limit] if limit else items
    check_labels(items, model.config.num_classes, model_name)
    bases = prepare_bases(items, out / "bases", base_size)
    panel = MemberPanel(model)
    result = {}
    with progress_bar(progress) as bar, ResultStore(out) as store:
        store.refuse_other_settings(run_settings(model_name, steps, seed, base_size, quantizer), RUN_KEYS)
        store.start_run(run_settings(model_name, steps, seed, base_size, quantizer, limit=limit, configs=configs),
                        seed=seed)
        for config in configs:
            task = bar.add_task(f"{model_name} · attack through {config}", total=len(bases), status="")
            rows = attack_config(model, panel, bases, out, config, steps=steps, seed=seed, batch_size=batch_size,
                                 bar=bar, task=task, quantizer=quantizer, base_size=base_size, store=store)
            names = {b.path.name for b in bases}
            result[config] = [r for r in rows if r.image in names]  # this run's images only
    return result


# -- summaries -------------------------------------------------------------------------------
def accuracy_matrix(rows_by_config: dict[str, list[AttackRow]], kind: str) -> dict[str, dict[str, float]]:
    """Accuracy (%) ``[defense][attack]``: images whose output (``float`` or ``file``) the model
    behind the defense's downscaler still classifies correctly; error rows excluded."""
    out: dict[str, dict[str, float]] = {}
    for attack, rows in rows_by_config.items():
        ok = [r for r in rows if r.status != "error"]
        for defense in DOWNSCALERS:
            fooled = [(r.float_fooled if kind == "float" else r.file_fooled)[defense] for r in ok]
            out.setdefault(defense, {})[attack] = 100.0 * sum(not f for f in fooled) / max(1, len(fooled))
    return out


def clean_accuracy(rows: list[AttackRow]) -> dict[str, float]:
    ok = [r for r in rows if r.status != "error"]
    return {m: 100.0 * sum(r.clean[m] for r in ok) / max(1, len(ok)) for m in DOWNSCALERS}


def distortion_at(rows: list[AttackRow], kind: str, level: float = 0.9) -> float:
    """Smallest d with P(success at distortion ≤ d) ≥ ``level`` (Table 9.1), over the images
    correctly classified by the attacked classifier; success of a file = every member it
    attacks fooled (the config's own downscaler, or all six for an ensemble). inf if never."""
    config = rows[0].config if rows else ""
    members = DOWNSCALERS if config in ENSEMBLES else (config,)
    ds = []
    for r in rows:
        if r.status in ("error", "misclassified"):
            continue
        if kind == "float":
            ok, d = all(r.float_fooled[m] for m in members), r.float_distortion
        else:
            ok, d = all(r.file_fooled[m] for m in members), r.file_distortion
        ds.append(d if ok else math.inf)
    if not ds:
        return math.nan
    ds.sort()
    k = math.ceil(level * len(ds)) - 1
    return ds[k]


def fool_all_rate(rows: list[AttackRow]) -> float:
    """Fraction (%) of attacked images whose PNG fools all six members."""
    att = [r for r in rows if r.status not in ("error", "misclassified")]
    return 100.0 * sum(all(r.file_fooled[m] for m in DOWNSCALERS) for r in att) / max(1, len(att))


def expected_success_vs_random_resize(rows: list[AttackRow], kind: str = "file",
                                      pool: tuple[str, ...] = DOWNSCALERS) -> float:
    """Success (%) against the random-resize defense drawing uniformly from ``pool``, as an exact
    expectation: per image, the fraction of the pool's downscalers it fools, over images whose
    original the defense classifies correctly on average (clean expectation > 1/2)."""
    vals = []
    for r in rows:
        if r.status == "error" or sum(r.clean[m] for m in pool) * 2 <= len(pool):
            continue
        f = r.file_fooled if kind == "file" else r.float_fooled
        vals.append(sum(f[m] for m in pool) / len(pool))
    return 100.0 * sum(vals) / max(1, len(vals))


def expected_clean_accuracy(rows: list[AttackRow], pool: tuple[str, ...] = DOWNSCALERS) -> float:
    """Clean accuracy (%) of the random-resize defense drawing uniformly from ``pool`` (expectation)."""
    ok = [r for r in rows if r.status != "error"]
    return 100.0 * sum(sum(r.clean[m] for m in pool) / len(pool) for r in ok) / max(1, len(ok))


def write_csv(path: Path, header: list[str], lines: list[list[Any]]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(lines)


def heatmap(matrix: dict[str, dict[str, float]], path: Path, title: str, order: tuple[str, ...]) -> None:
    """Accuracy heat map: rows the defense's downscaler, columns the attack's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [[matrix[d][a] for a in order] for d in order]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(order)), [LABELS[a] for a in order])
    ax.set_yticks(range(len(order)), [LABELS[d] for d in order])
    ax.set_xlabel("attack through")
    ax.set_ylabel("defense (model behind)")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 50 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- subcommands -----------------------------------------------------------------------------
def mean_distortion_fooled(rows_by_config: dict[str, list[AttackRow]],
                           configs: tuple[str, ...]) -> dict[str, tuple[int, float, float]]:
    """Per attack config: (images whose PNG fooled it, mean float distortion, mean PNG distortion) over
    those images; NaN means where there are none."""
    result = {}
    for c in configs:
        fooled = [r for r in rows_by_config[c] if r.status == "fooled" and r.file_distortion is not None
                  and r.float_distortion is not None]
        n = len(fooled)
        result[c] = (n, sum(r.float_distortion for r in fooled) / n if n else float("nan"),
                     sum(r.file_distortion for r in fooled) / n if n else float("nan"))
    return result


def transfer_table(rows_by_config: dict[str, list[AttackRow]], out: Path, model_name: str) -> str:
    """Table 9.2: CSV, heat maps and Markdown for floats and files; returns the Markdown."""
    order = TABLE92_ORDER
    n = len([r for r in rows_by_config[order[0]] if r.status != "error"])
    md = [f"Table 9.2 layout: {model_name}, {n} base images; rows: the defense's downscaler, "
          "columns: the attack's; accuracy (%). Thesis (EfficientNet-b0) in brackets.", ""]
    summary: dict[str, Any] = {"model": model_name, "images": n, "clean": clean_accuracy(rows_by_config[order[0]])}
    for kind in ("file", "float"):
        m = accuracy_matrix(rows_by_config, kind)
        summary[kind] = m
        what = "PNG files" if kind == "file" else "floats"
        heatmap(m, out / f"table92_{kind}.png", f"{model_name}: accuracy of {what} (defense × attack)", order)
        write_csv(out / f"table92_{kind}.csv", ["defense"] + list(order),
                  [[d] + [round(m[d][a], 2) for a in order] for d in order])
        md += [f"**{'PNG files (quantized at 600×600, decoded)' if kind == 'file' else 'Floats'}**", "",
               "| defense \\ attack | " + " | ".join(LABELS[a] for a in order) + " | clean |",
               "|---|" + "--:|" * (len(order) + 1)]
        for d in order:
            cells = [f"{m[d][a]:.1f} ({THESIS_92[d][a]:g})" for a in order]
            md.append(f"| {LABELS[d]} | " + " | ".join(cells) + f" | {summary['clean'][d]:.1f} |")
        md.append("")
    summary["mean_distortion_fooled"] = mean_distortion_fooled(rows_by_config, order)
    md += ["**Mean distortion of the images whose PNG fools their own downscaler (RMSE at the base size)**", "",
           "| attack | images | floats | PNG |", "|---|--:|--:|--:|"]
    for a, (count, df_float, df_file) in summary["mean_distortion_fooled"].items():
        md.append(f"| {LABELS[a]} | {count} | {df_float:.3f} | {df_file:.3f} |")
    md.append("")
    (out / "table92.json").write_text(json.dumps(summary, indent=2))
    text = "\n".join(md)
    (out / "table92.md").write_text(text)
    return text


def ensemble_table(rows_by_config: dict[str, list[AttackRow]], out: Path, model_name: str) -> str:
    """Table 9.1 layout (distortion at 90% success) plus the all-members rate of the files."""
    cols = [c for c in ("nearest", "area", "ens-avg", "ens-worst") if c in rows_by_config]
    singles = [c for c in DOWNSCALERS if c in rows_by_config]
    summary: dict[str, Any] = {"model": model_name}
    md = [f"Table 9.1 layout: {model_name}, distortion (RMSE, pixel units, of the base image) at 90% success; "
          "an ensemble image counts only when all six members are fooled.", "",
          "| output | " + " | ".join(LABELS[c] for c in cols) + " |", "|---|" + "--:|" * len(cols)]
    for kind in ("float", "file"):
        d90 = {c: distortion_at(rows_by_config[c], kind) for c in cols}
        summary[f"d90_{kind}"] = d90
        md.append(f"| {'PNG files' if kind == 'file' else 'floats'} | " +
                  " | ".join(f"{d90[c]:.3f}" for c in cols) + " |")
    md.append("| thesis b0 (224), floats | " + " | ".join(f"{v:.2f}" for v in THESIS_91["b0 (224)"][:len(cols)]) + " |")
    md.append("")
    all_singles = {c: distortion_at(rows_by_config[c], "file") for c in singles}
    summary["d90_file_singles"] = all_singles
    for c in [c for c in cols if c in ENSEMBLES]:
        rate = fool_all_rate(rows_by_config[c])
        summary.setdefault("fool_all_six_pct", {})[c] = rate
        worst_single = max(all_singles.values()) if all_singles else math.nan
        ratio = summary["d90_file"][c] / worst_single if worst_single else math.nan
        summary.setdefault("ratio_to_hardest_single", {})[c] = ratio
        md.append(f"- {LABELS[c]}: {rate:.1f}% of the attacked images' PNG files fool all six members; d at 90% "
                  f"{summary['d90_file'][c]:.3f} = {ratio:.2f}× the hardest single downscaler's "
                  f"({max(all_singles, key=all_singles.get) if all_singles else '-'}, {worst_single:.3f}); "
                  "thesis ≈ 1.35× (b0: Area 0.39 → 0.53).")
    if all_singles:
        md.append("- Single downscalers, PNG d at 90%: " +
                  ", ".join(f"{LABELS[c]} {v:.3f}" for c, v in all_singles.items()))
    write_csv(out / "table91.csv", ["config", "d90_float", "d90_file"],
              [[c, summary["d90_float"][c], summary["d90_file"][c]] for c in cols])
    (out / "table91.json").write_text(json.dumps(summary, indent=2, default=str))
    _success_curves(rows_by_config, cols, out / "table91_curves.png", model_name)
    text = "\n".join(md) + "\n"
    (out / "table91.md").write_text(text)
    return text


def _success_curves(rows_by_config: dict[str, list[AttackRow]], cols: list[str], path: Path, model_name: str) -> None:
    """P(success at distortion ≤ d) of the files, one curve per config (Fig. 9.3 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in cols:
        rows = [r for r in rows_by_config[c] if r.status not in ("error", "misclassified")]
        members = DOWNSCALERS if c in ENSEMBLES else (c,)
        ds = sorted(r.file_distortion for r in rows if all(r.file_fooled[m] for m in members))
        if not rows:
            continue
        ax.step([0] + ds, [0] + [(i + 1) / len(rows) for i in range(len(ds))], where="post", label=LABELS[c])
    ax.axhline(0.9, color="grey", lw=0.7, ls=":")
    ax.set_xlabel("distortion d of the PNG (pixel units, 600×600)")
    ax.set_ylabel("success rate")
    ax.set_title(f"{model_name}: success against distortion", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def random_resize_table(rows_by_config: dict[str, list[AttackRow]], out: Path, model: Any, model_name: str,
                        draws: int = 5, seed: int = 0) -> str:
    """§9.5: clean accuracy behind random resize vs each downscaler, and the success of each attack
    config's files against it (exact expectation over the draw, and ``draws`` real draws)."""
    from ..defenses.random_resize import RandomResizeDefense

    defense = RandomResizeDefense(model, crop_pct=1.0)
    any_rows = next(iter(rows_by_config.values()))
    clean = clean_accuracy(any_rows)
    ok = [r for r in any_rows if r.status != "error"]
    bases = out / "bases"
    torch.manual_seed(seed)
    drawn_correct = []
    for r in ok:  # the defense module itself, ``draws`` inferences per original
        x = decode((bases / r.image).read_bytes(), ".png").float()[None].repeat(draws, 1, 1, 1).to(model.device)
        with torch.no_grad():
            drawn_correct.append(float((defense(x).argmax(1) == r.label).float().mean()))
    expected_clean = expected_clean_accuracy(ok)
    five = tuple(m for m in DOWNSCALERS if m != "bilg")  # our BilG reading costs clean accuracy (see docs)
    summary: dict[str, Any] = {"model": model_name, "images": len(ok), "clean_per_downscaler": clean,
                               "clean_random_resize_expected": expected_clean,
                               "clean_random_resize_drawn": 100 * sum(drawn_correct) / max(1, len(drawn_correct)),
                               "clean_random_resize_without_bilg": expected_clean_accuracy(ok, five),
                               "draws": draws, "success": {}}
    md = [f"Random-resize defense (§9.5), {model_name}, {len(ok)} base images; each inference draws one "
          "of the six downscalers (or of the five without BilG).", "",
          "| classifier | clean accuracy (%) |", "|---|--:|"]
    for m in DOWNSCALERS:
        md.append(f"| {LABELS[m]} only | {clean[m]:.1f} |")
    md.append(f"| random resize, six (expectation) | {expected_clean:.1f} |")
    md.append(f"| random resize, six ({draws} draws per image) | {summary['clean_random_resize_drawn']:.1f} |")
    md.append(f"| random resize, five without BilG (expectation) | "
              f"{summary['clean_random_resize_without_bilg']:.1f} |")
    md += ["", "| attack through | success vs random resize (six), PNG (%) | floats (%) | five without BilG, PNG (%) "
           "| PNG d at 90% vs its own target |", "|---|--:|--:|--:|--:|"]
    for c, rows in rows_by_config.items():
        s_file = expected_success_vs_random_resize(rows, "file")
        s_float = expected_success_vs_random_resize(rows, "float")
        s_five = expected_success_vs_random_resize(rows, "file", five)
        summary["success"][c] = {"file": s_file, "float": s_float, "file_without_bilg": s_five,
                                 "d90_file": distortion_at(rows, "file")}
        md.append(f"| {LABELS[c]} | {s_file:.1f} | {s_float:.1f} | {s_five:.1f} | "
                  f"{summary['success'][c]['d90_file']:.3f} |")
    (out / "random_resize.json").write_text(json.dumps(summary, indent=2, default=str))
    write_csv(out / "random_resize.csv", ["attack", "success_file_pct", "success_float_pct",
                                          "success_file_without_bilg_pct", "d90_file"],
              [[c, v["file"], v["float"], v["file_without_bilg"], v["d90_file"]]
               for c, v in summary["success"].items()])
    text = "\n".join(md) + "\n"
    (out / "random_resize.md").write_text(text)
    return text


# -- command line ----------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, limit: int) -> None:
    from ..cli_types import positive_int

    p.add_argument("images", nargs="+", help="image set (folder with labels.csv, ImageFolder, ...)")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--steps", type=positive_int, default=50, help="BP gradients per image (attack + quantizer)")
    p.add_argument("--limit", type=positive_int, default=limit, help="first N images")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per attack call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--base-size", type=positive_int, default=BASE_SIZE, help="side of the base images (L)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--out", default=None, help="output folder (default runs/scaling-MODEL; shared by the "
                   "scaling subcommands so that they reuse each other's attacks)")
    p.add_argument("--resume", action="store_true", help="continue in a folder that already holds attacks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--quantize", default="smart", choices=PNG_QUANTIZERS,
                   help="quantizer of the PNG files (the floats are kept too)")


@experiment("transfer-table", "Table 9.2: attacks through each downscaler, evaluated through each")
def add_transfer_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``transfer-table`` to ``advimage experiment``'s subparsers."""
    p = experiment_subparsers.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)
    _common(p, 100)
    p.set_defaults(experiment_main=_main_transfer)
    return p


@experiment("ensemble-table", "Table 9.1: nearest, area and the six-downscaler ensembles (avg, worst)")
def add_ensemble_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``ensemble-table`` to ``advimage experiment``'s subparsers."""
    p = experiment_subparsers.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)
    _common(p, 100)
    p.add_argument("--configs", default="nearest,area,ens-avg,ens-worst",
                   help="attack configs: downscaler names and ens-avg / ens-worst / ens-max")
    p.set_defaults(experiment_main=_main_ensemble)
    return p


@experiment("random-resize", "§9.5: the random-resize defense against single and ensemble attacks")
def add_random_resize_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``random-resize`` to ``advimage experiment``'s subparsers."""
    p = experiment_subparsers.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)
    _common(p, 100)
    p.add_argument("--draws", type=int, default=5, help="random inferences per original for the drawn accuracy")
    p.add_argument("--configs", default=",".join(DOWNSCALERS + ("ens-avg", "ens-worst")),
                   help="attack configs to test against the defense")
    p.set_defaults(experiment_main=_main_random_resize)
    return p


def _prepare(args: argparse.Namespace) -> Path:
    try:  # the engine's checks (e.g. --steps beyond the quantizer's gradients) before any folder is made
        engine_settings(TABLE92_ORDER[0], args.steps, args.seed, args.quantize)
    except ValueError as exc:
        fail(str(exc))
    out = Path(args.out or f"runs/scaling-{args.model}")
    stored = (out / DB_NAME).is_file()
    if stored:
        with ResultStore(out) as store:
            held = len(store) > 0
            try:
                store.refuse_other_settings(run_settings(args.model, args.steps, args.seed, args.base_size,
                                                         args.quantize), RUN_KEYS)
            except SettingsMismatch as exc:
                fail(f"{exc}; use another --out for other settings")
    else:
        held = (out / "attacks").is_dir() and any((out / "attacks").glob("*/rows.jsonl"))
        _check_legacy_settings(out, args)
    if held and not args.resume:
        fail(f"{out} already holds attacks: pass --resume to continue and reuse them, "
             "or choose another --out")
    return out


def _check_legacy_settings(out: Path, args: argparse.Namespace) -> None:
    """A folder of an earlier version (``rows.jsonl``, a flat ``settings.json``): the same refusal."""
    settings = out / "settings.json"
    if not settings.is_file():
        return
    old = json.loads(settings.read_text())
    if ((old.get("model"), old.get("steps"), old.get("seed"), old.get("base_size", BASE_SIZE),
         old.get("quantizer", "smart"))
            != (args.model, args.steps, args.seed, args.base_size, args.quantize)):
        fail(f"{out} holds attacks of {old.get('model')} (steps {old.get('steps')}, seed "
             f"{old.get('seed')}, quantizer {old.get('quantizer', 'smart')}); use another --out for "
             "other settings")


def _configs(text: str) -> list[str]:
    configs = [c.strip() for c in text.split(",") if c.strip()]
    for c in configs:
        if c not in DOWNSCALERS + ENSEMBLES:
            fail(f"unknown config {c!r}; valid: {', '.join(DOWNSCALERS + ENSEMBLES)}")
    return configs


def _run(args: argparse.Namespace, configs: list[str]) -> tuple[Path, dict[str, list[AttackRow]]]:
    out = _prepare(args)
    rows = run_configs(args.images, out, configs, model_name=args.model, steps=args.steps, limit=args.limit,
                       seed=args.seed, batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                       base_size=args.base_size, quantizer=args.quantize)
    return out, rows


def _main_transfer(args: argparse.Namespace) -> int:
    out, rows = _run(args, list(TABLE92_ORDER))
    print(transfer_table(rows, out, args.model))
    return 0


def _main_ensemble(args: argparse.Namespace) -> int:
    out, rows = _run(args, _configs(args.configs))
    print(ensemble_table(rows, out, args.model))
    return 0


def _main_random_resize(args: argparse.Namespace) -> int:
    from ..models import load_model

    out, rows = _run(args, _configs(args.configs))
    print(random_resize_table(rows, out, load_model(args.model, device=args.device), args.model, draws=args.draws,
                              seed=args.seed))
    return 0
