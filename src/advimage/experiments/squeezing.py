"""Squeezing defenses against our quantized files (thesis §5.3.2–5.3.3; Xu et al. 2018).

On the first ``limit`` images of a set, at the model's input size (Scenario A, centre crops):

* sources of files, all made and verified by the engine (:func:`advimage.engine.run_batch`):
  ``bp`` — the attack (BP best-effort by default) + smart quantization to PNG against the plain
  model; ``fgsm-round`` — FGSM best-effort then plain rounding to uint8 (``round`` quantizer), its
  ε search run on rounded images (the model behind ``bits:8``, i.e. ``round(x)``, straight-through
  gradient) so that the smallest ε whose *rounded* image fools the model is found (a float-only
  search stops at an ε that rounding undoes);
  ``adaptive@D`` — the same attack + smart quantization against the model behind squeezer D with
  BPDA (forward squeezed, backward identity), verified through D;
* (a) accuracy of each defended model on the clean crops and on the verified files of each source;
* (b) success of the adaptive attack (verified files over the images the defended model classifies
  correctly) and its distortion against the undefended attack on the same images;
* (c) the feature-squeezing detector (5-bit + 2×2 median, threshold at 5% FPR on ``calibration``
  clean crops taken after the attacked images): TPR on the files of each source that fool the
  plain model, FPR on the attacked images' clean crops (held out).

Every file is written under ``out/<source>/`` and read back from disk before it is classified.
Outputs: the rows (one per image × source) in the result store ``results.sqlite`` and, exported from
it, ``rows.csv``, ``summary.json``, ``table.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cli_support import fail
from ..data import check_labels, discover
from ..defenses.feature_squeezing import FeatureSqueezingDetector
from ..engine import Settings, run_batch, write_outputs
from ..images import ImageReadError, load_for_model, read_image
from ..models import load_model
from ..specs import apply_defense
from ..specs import parse as parse_spec
from .options import experiment_parser
from .registry import experiment
from .stored import ExperimentRun

DEFAULT_DEFENSES = ("bits:3", "median:2")
# BP's stage 1 sized to cross within 5% of the budget (κ = 0.05, default 0.2): through a quantizing
# squeezer, BPDA's first-order estimate of the distance to the boundary is too short, and with the
# default κ BP never crossed on 2 of 27 Lite0 images behind bits:3 (100 or 300 gradients); with
# κ = 0.05 (or PGD) it does
DEFAULT_ADAPTIVE_PARAMS = {"kappa": 0.05}


def parse_params(text: str) -> dict:
    """``"kappa=0.05,gamma_min=0.7"`` -> {"kappa": 0.05, "gamma_min": 0.7} (ints, floats, else text)."""
    out: dict = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad parameter {part!r}: expected NAME=VALUE")
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value.strip()
    return out


def defense_from_text(model, text: str):
    """``"bits:3"`` -> the model behind that registered defense (BPDA identity gradient)."""
    _, defs = parse_spec(f"m+{text}")
    if len(defs) != 1 or not defs[0][0]:
        raise ValueError(f"bad defense {text!r}: expected NAME or NAME:ARG")
    return apply_defense(model, *defs[0])


@dataclass
class Row:
    """One image × source: the file (or the clean crop, source ``clean``) and its verdicts."""

    image: str
    label: int
    source: str                      # clean | bp | fgsm-round | adaptive@<defense>
    status: str                      # engine status (fooled | failed | misclassified) or "clean"
    file: str = ""
    distortion: float | None = None  # eq. 6.2 against the clean crop, on the file read back
    prediction: dict[str, int] = field(default_factory=dict)  # "none" or defense -> predicted class
    attack_success: bool | None = None    # the float attack output fooled the victim (engine row)
    quantize_success: bool | None = None  # its quantization did (before the file check)
    score: float | None = None       # feature-squeezing score (on the plain model)
    squeezer_scores: dict[str, float] = field(default_factory=dict)


def _source_settings(source: str, attack: str, steps: int, fgsm_steps: int, df: float, seed: int,
                     adaptive: tuple[str, int, dict]) -> Settings:
    if source == "fgsm-round":
        return Settings(attack="fgsm", steps=fgsm_steps, quantizers=("round",), size="model", seed=seed,
                        margin=0.0)
    params: dict = {}
    if source.startswith("adaptive@"):
        attack, steps, params = adaptive
    return Settings(attack=attack, steps=steps, quantizers=("smart",), df=df, size="model", seed=seed, margin=0.0,
                    attack_params=params)


def run(images: list[str], out: Path, *, model_name: str = "efficientnet_lite0", attack: str = "bp",
        steps: int = 100, fgsm_steps: int = 30, adaptive_attack: str | None = None,
        adaptive_steps: int | None = None, adaptive_params: dict | None = None,
        defenses: tuple[str, ...] = DEFAULT_DEFENSES, df: float = 1, limit: int | None = 30, calibration: int = 100,
        fpr: float = 0.05, batch_size: int = 8, device: str | None = None, seed: int = 0,
        progress: bool = True) -> dict:
    """Run the experiment: the rows in ``out``'s result store, exported as ``rows.csv``,
    ``summary.json`` and ``table.md`` under ``out``."""
    from rich.progress import Progress

    out = Path(out)
    t_start = time.perf_counter()
    adaptive_attack = adaptive_attack or attack
    if adaptive_params is None:
        adaptive_params = dict(DEFAULT_ADAPTIVE_PARAMS) if adaptive_attack == "bp" else {}
    adaptive = (adaptive_attack, adaptive_steps or steps, adaptive_params)
    Settings(attack=adaptive_attack, steps=adaptive[1], attack_params=adaptive_params)  # refuse bad ones now
    model = load_model(model_name, device=device)
    defended = {d: defense_from_text(model, d) for d in defenses}
    all_items = discover(images)
    items = all_items[:limit] if limit else all_items
    calib_items = all_items[len(items):len(items) + calibration]
    check_labels(items + calib_items, model.config.num_classes, model_name)
    out.mkdir(parents=True, exist_ok=True)
    sources = ["bp", "fgsm-round"] + [f"adaptive@{d}" for d in defenses]
    # FGSM's ε search sees rounded images (model(round(x)), straight-through gradient), so that the
    # plain rounding of its output is the file it found adversarial; on integer files it is the model
    rounded = defense_from_text(model, "bits:8")
    victims = {"bp": model, "fgsm-round": rounded, **{f"adaptive@{d}": defended[d] for d in defenses}}
    rows: list[Row] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("squeezing", total=len(items) * len(sources))
        for b in range(0, len(items), batch_size):
            batch = []
            for it in items[b:b + batch_size]:
                try:
                    batch.append((it, load_for_model(it.path, model.config)))
                except ImageReadError as exc:
                    print(f"skipped: {exc}")
            if not batch:
                continue
            its = [it for it, _ in batch]
            x0 = torch.stack([x for _, x in batch]).float()
            labels = [it.label if it.label is not None else int(p) for it, p in zip(its, model.predict(x0))]
            for j, it in enumerate(its):
                rows.append(Row(image=it.path.name, label=labels[j], source="clean", status="clean"))
            for src in sources:
                settings = _source_settings(src, attack, steps, fgsm_steps, df, seed, adaptive)
                er = run_batch(victims[src], its, settings)
                write_outputs(er, out / src.replace(":", ""))
                for j, r in enumerate(er):
                    rows.append(Row(image=its[j].path.name, label=labels[j], source=src, status=r.status,
                                    file=r.output or "", distortion=r.distortion if r.output else None,
                                    attack_success=r.attack_success, quantize_success=r.quantize_success))
                bar.update(task, advance=len(its))
    detector = _classify_and_score(model, defended, rows, items, calib_items, fpr)
    settings = dict(experiment="squeezing", model=model_name, attack=attack, steps=steps, fgsm_steps=fgsm_steps,
                    adaptive_attack=adaptive_attack, adaptive_steps=adaptive[1], adaptive_params=adaptive_params,
                    defenses=list(defenses), df=df, limit=limit, calibration=calibration, fpr=fpr, seed=seed)
    with ExperimentRun(out, settings, lambda r: _columns(r, model_name)) as stored:
        stored.commit(asdict(r) for r in rows)  # the rows are complete once the files are classified
        rows = [Row(**r) for r in stored.records()]  # the summary files are exports of the store
    summary = summarize(rows, sources, list(defenses), detector)
    summary.update(model=model_name, attack=attack, steps=steps, fgsm_steps=fgsm_steps,
                   adaptive_attack=adaptive_attack, adaptive_steps=adaptive[1], adaptive_params=adaptive_params,
                   df=df, seed=seed,
                   defenses=list(defenses), images=len({r.image for r in rows}), calibration=len(calib_items),
                   seconds=time.perf_counter() - t_start)
    _write_rows(rows, out / "rows.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown(summary))
    return summary


def _columns(r: Mapping[str, Any], model_name: str) -> dict:
    """A row's common store columns (the source as ``attack``; the file's plain-model verdict)."""
    pred = r["prediction"].get("none")
    return dict(model=model_name, attack=r["source"], quantizer="none" if r["source"] == "clean" else "file",
                image=r["image"], label=r["label"], adv_label=pred, distortion=r["distortion"],
                success=None if pred is None or r["source"] == "clean" else pred != r["label"])


def _classify_and_score(model, defended: dict, rows: list[Row], items, calib_items,
                        fpr: float) -> FeatureSqueezingDetector:
    """Fill predictions (plain and defended) and detector scores, the files read back from disk;
    returns the detector fitted on the calibration crops."""
    by_name = {it.path.name: it for it in items}
    calib = []
    for it in calib_items:
        try:
            calib.append(load_for_model(it.path, model.config))
        except ImageReadError as exc:
            print(f"calibration image skipped: {exc}")
    detector = FeatureSqueezingDetector(model, fpr=fpr)
    todo = [r for r in rows if r.source == "clean" or r.file]
    xs = torch.stack([load_for_model(by_name[r.image].path, model.config) if r.source == "clean"
                      else read_image(r.file) for r in todo]).float()
    preds = {"none": model.predict(xs)}
    for d, m in defended.items():
        preds[d] = m.predict(xs)
    per = detector.squeezer_scores(xs)
    detector.fit(torch.stack(calib).float() if calib else xs[[i for i, r in enumerate(todo) if r.source == "clean"]])
    for i, r in enumerate(todo):
        r.prediction = {k: int(v[i]) for k, v in preds.items()}
        r.squeezer_scores = {n: float(per[i, k]) for k, n in enumerate(detector.names)}
        r.score = float(per[i].max())
        if r.source == "clean":
            r.distortion = 0.0
    return detector


def _median(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def summarize(rows: list[Row], sources: list[str], defenses: list[str], det: FeatureSqueezingDetector) -> dict:
    """(a) accuracies, (b) adaptive success and distortion price, (c) detection rates."""
    t = det.threshold
    clean = {r.image: r for r in rows if r.source == "clean"}
    by = {s: {r.image: r for r in rows if r.source == s} for s in sources}
    s: dict = {"threshold": t, "fpr_target": det.fpr, "squeezers": det.names, "sources": sources,
               "n": len(clean)}
    # (a) accuracy of the plain and defended models on clean crops and on each source's verified files
    acc: dict = {"clean": {d: _mean([float(r.prediction[d] == r.label) for r in clean.values()])
                           for d in ["none"] + defenses}}
    for src in sources:
        files = [r for r in by[src].values() if r.file]
        acc[src] = {d: _mean([float(r.prediction[d] == r.label) for r in files]) for d in ["none"] + defenses}
        acc[src]["files"] = len(files)
    s["accuracy"] = acc
    # (b) adaptive attacks: success over images the defended model classifies correctly
    adaptive: dict = {}
    for d in defenses:
        src = f"adaptive@{d}"
        attacked = [r for r in by[src].values() if r.status in ("fooled", "failed")]
        fooled = [r for r in attacked if r.status == "fooled"]
        both = [r for r in fooled if by["bp"][r.image].file]
        ratio = [r.distortion / by["bp"][r.image].distortion for r in both if by["bp"][r.image].distortion]
        adaptive[d] = {
            "correct_defended": len(attacked), "fooled": len(fooled),
            "float_success": _mean([float(bool(r.attack_success)) for r in attacked]),
            "success": len(fooled) / len(attacked) if attacked else None,
            "mean_distortion": _mean([r.distortion for r in fooled]),
            "median_distortion": _median([r.distortion for r in fooled]),
            "paired": len(both),
            "median_distortion_paired": _median([r.distortion for r in both]),
            "median_distortion_undefended_paired": _median([by["bp"][r.image].distortion for r in both]),
            "median_ratio": _median(ratio), "mean_ratio": _mean(ratio),
            "also_fool_plain": _mean([float(r.prediction["none"] != r.label) for r in fooled]),
        }
    plain = [r for r in by["bp"].values() if r.status in ("fooled", "failed")]
    s["undefended"] = {"correct": len(plain), "fooled": sum(r.status == "fooled" for r in plain),
                       "success": _mean([float(r.status == "fooled") for r in plain]),
                       "float_success": _mean([float(bool(r.attack_success)) for r in plain]),
                       "median_distortion": _median([r.distortion for r in plain if r.file]),
                       "mean_distortion": _mean([r.distortion for r in plain if r.file])}
    s["fgsm"] = {"fooled": sum(r.status == "fooled" for r in by["fgsm-round"].values()),
                 "attacked": sum(r.status in ("fooled", "failed") for r in by["fgsm-round"].values()),
                 "median_distortion": _median([r.distortion for r in by["fgsm-round"].values() if r.file])}
    s["adaptive"] = adaptive
    # (c) detection: files that fool the plain model; FPR on the held-out clean crops
    detection: dict = {"fpr_clean_heldout": _mean([float(r.score > t) for r in clean.values()])}
    for src in sources:
        adv = [r for r in by[src].values() if r.file and r.prediction["none"] != r.label]
        detection[src] = {"n": len(adv), "tpr": _mean([float(r.score > t) for r in adv]),
                          "median_score": _median([r.score for r in adv]),
                          **{f"tpr_{n}_alone": _mean([float(r.squeezer_scores[n] > t) for r in adv])
                             for n in det.names}}
    detection["clean_median_score"] = _median([r.score for r in clean.values()])
    s["detection"] = detection
    return s


def _write_rows(rows: list[Row], path: Path) -> None:
    keys = sorted({k for r in rows for k in r.prediction})
    sq = sorted({k for r in rows for k in r.squeezer_scores})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "source", "status", "file", "distortion", "attack_success",
                    "quantize_success", "score"]
                   + [f"pred_{k}" for k in keys] + [f"score_{k}" for k in sq])
        for r in rows:
            w.writerow([r.image, r.label, r.source, r.status, r.file,
                         "" if r.distortion is None else f"{r.distortion:.6g}",
                         "" if r.attack_success is None else int(r.attack_success),
                         "" if r.quantize_success is None else int(r.quantize_success),
                         "" if r.score is None else f"{r.score:.6g}"]
                        + [r.prediction.get(k, "") for k in keys]
                        + ["" if k not in r.squeezer_scores else f"{r.squeezer_scores[k]:.6g}" for k in sq])


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(s: dict) -> str:
    """The three tables: (a) accuracy, (b) adaptive attacks, (c) detection."""
    defs = s["defenses"]
    lines = [f"{s['model']}, {s['n']} images at model size; {s['attack']} best-effort {s['steps']} gradients + "
             f"smart quantization (df={s['df']:g}); FGSM {s['fgsm_steps']} ε trials + rounding", "",
             "(a) Accuracy (%) of the model behind each squeezer, on clean crops and on each source's verified "
             "files:", "",
             "| images | files | none | " + " | ".join(defs) + " |", "|---|---|---|" + "---|" * len(defs)]
    for src in ["clean"] + s["sources"]:
        a = s["accuracy"][src]
        lines.append(f"| {src} | {a.get('files', s['n'])} | " + " | ".join(_pct(a[d]) for d in ["none"] + defs)
                     + " |")
    u = s["undefended"]
    params = ", ".join(f"{k}={v}" for k, v in s["adaptive_params"].items())
    lines += ["", f"(b) Adaptive attack ({s['adaptive_attack']} {s['adaptive_steps']} gradients"
              f"{', ' + params if params else ''}, BPDA identity through the "
              "squeezer) + smart quantization, PNG files verified through the defended model; paired: images "
              "fooled by both the adaptive and the undefended attack:", "",
              "| defense | attacked | float success % | success % | median d | median d, paired "
              "| undefended median d, paired | median ratio | fools plain too % |", "|---" * 9 + "|",
              f"| none | {u['correct']} | {_pct(u['float_success'])} | {_pct(u['success'])} | "
              f"{_num(u['median_distortion'])} | – | – | 1 | – |"]
    for d in defs:
        a = s["adaptive"][d]
        lines.append(f"| {d} | {a['correct_defended']} | {_pct(a['float_success'])} | {_pct(a['success'])} | "
                     f"{_num(a['median_distortion'])} | "
                     f"{_num(a['median_distortion_paired'])} | {_num(a['median_distortion_undefended_paired'])} | "
                     f"{_num(a['median_ratio'], '.2f')} | {_pct(a['also_fool_plain'])} |")
    det = s["detection"]
    names = s["squeezers"]
    lines += ["", f"(c) Feature squeezing ({' + '.join(names)}), threshold {s['threshold']:.4f} at "
              f"{100 * s['fpr_target']:.0f}% FPR on {s['calibration']} clean calibration crops; held-out clean FPR "
              f"{_pct(det['fpr_clean_heldout'])}% (median clean score {_num(det['clean_median_score'], '.4f')}). "
              "Files that fool the plain model:", "",
              "| source | files | TPR % | " + " | ".join(f"TPR {n} alone %" for n in names) + " | median score |",
              "|---|---|---|" + "---|" * (len(names) + 1)]
    for src in s["sources"]:
        r = det[src]
        lines.append(f"| {src} | {r['n']} | {_pct(r['tpr'])} | "
                     + " | ".join(_pct(r[f'tpr_{n}_alone']) for n in names) + f" | {_num(r['median_score'], '.4f')} |")
    return "\n".join(lines) + "\n"


@experiment("squeezing", "§5.3: bit-depth and median squeezers as defenses (accuracy, BPDA adaptive attack) and "
            "feature-squeezing detection of our files")
def add_parser(experiment_subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``squeezing`` to ``advimage experiment``'s subparsers."""
    p = experiment_parser(experiment_subparsers, name, help, out="runs/squeezing", limit=30)
    p.add_argument("--defenses", default=",".join(DEFAULT_DEFENSES),
                   help="squeezers as defenses, comma-separated (bits:B, median:K)")
    p.add_argument("--fgsm-steps", type=int, default=30, help="FGSM's ε trials (the rounded FGSM files)")
    p.add_argument("--adaptive-attack", default=None, help="attack of the adaptive rows (default: --attack)")
    p.add_argument("--adaptive-steps", type=int, default=None,
                   help="gradients per image of the adaptive attacks (default: --steps)")
    p.add_argument("--adaptive-params", default=None,
                   help="hyperparameters of the adaptive attack, NAME=VALUE,... (default for bp: kappa=0.05, "
                        "its stage 1 sized to cross within 5%% of the budget; '' for the attack's defaults)")
    p.add_argument("--calibration", type=int, default=100,
                   help="clean images after the attacked ones that set the detector's threshold (0: the attacked "
                        "images' own clean crops)")
    p.add_argument("--fpr", type=float, default=0.05, help="false-positive rate of the detector's threshold")
    p.set_defaults(experiment_main=main)
    return p


def main(args) -> int:
    """Entry point for parsed ``advimage experiment squeezing`` arguments."""
    from ..attacks import names as attack_names
    from ..specs import check as check_spec

    if args.attack not in attack_names():
        fail(f"unknown attack {args.attack!r}; valid attacks: {', '.join(attack_names())}")
    defenses = tuple(d.strip() for d in args.defenses.split(",") if d.strip())
    if args.calibration < 0 or not 0 <= args.fpr < 1:
        fail("--calibration must be >= 0 and --fpr in [0, 1)")
    try:
        for d in defenses:
            check_spec(f"{args.model}+{d}")
    except (KeyError, ValueError) as exc:
        fail(f"bad --model/--defenses: {exc}")
    adaptive_attack = args.adaptive_attack or args.attack
    try:
        params = None if args.adaptive_params is None else parse_params(args.adaptive_params)
        Settings(attack=adaptive_attack, attack_params=params or {})
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"bad --adaptive-attack/--adaptive-params: {exc}")
    summary = run(args.images, Path(args.out), model_name=args.model, attack=args.attack, steps=args.steps,
                  fgsm_steps=args.fgsm_steps, adaptive_attack=adaptive_attack, adaptive_steps=args.adaptive_steps,
                  adaptive_params=params, defenses=defenses, df=args.df,
                  limit=args.limit, calibration=args.calibration, fpr=args.fpr, batch_size=args.batch_size,
                  device=args.device, seed=args.seed, progress=not args.quiet)
    print(markdown(summary))
    return 0
