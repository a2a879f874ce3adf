"""Tables 8.2-8.4 (thesis §8.4): how detectable are adversarial files, per quantizer?

1. Pairs (:mod:`.stego_pairs`): crops of the photos, split by photo; training pairs from
   best-effort FGSM + the Ch. 7 quantizer ("[12]"); test pairs from best-effort PGD2 + each
   quantizer (Ch. 7 ``smart``, ``hill``, ``mipod``, ``gina``) at Ch. 8's d_f = 2 and 4 (``df`` 1
   and 3 here); for Table 8.4, training pairs from FGSM + GINA at d_f = 4.
2. Features (SCRMQ1 by default, SRM optional) of every file, cached on disk, in processes.
3. Detectors trained on the training pairs (ridge, FLD ensemble; SRNet at a reduced scale with
   ``--srnet-epochs``), then per test variant: P_suc (correctly classified crops whose file fools
   the model), mean L2 (‖x_q − x0‖₂, unnormalized, Ch. 8's unit), TPR at 5% FPR (threshold from
   the clean test covers' scores) and P(fool both) = P_suc (1 − TPR₅).

The model sees the crops at their own size (``--size``, no resize layer): compute is what
limits this experiment on a CPU, and feature extraction costs ∝ pixels.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .registry import experiment
from .stego_pairs import Variant, classify, make_covers, make_variants

THESIS_83 = {  # Table 8.3, vanilla EfficientNet-b0: (P_suc %, mean L2, SCRMQ1 TPR5 %, SRNet TPR5 %)
    ("smart", 2): (98.6, 101, 83.1, 93.8), ("hill", 2): (98.6, 113, 78.0, 87.6), ("hill", 4): (98.9, 125, 76.0, 87.4),
    ("mipod", 2): (98.3, 176, 77.4, 86.6), ("mipod", 4): (98.7, 164, 74.4, 84.5),
    ("gina", 2): (98.5, 283, 24.4, 68.3), ("gina", 4): (98.8, 300, 18.6, 50.9),
}
THESIS_84 = {("smart", 2): 55.9, ("hill", 2): 53.4, ("hill", 4): 50.4, ("mipod", 2): 56.1, ("mipod", 4): 53.9,
             ("gina", 2): 77.7, ("gina", 4): 68.5}
QUANTIZERS = ("smart", "hill", "mipod", "gina")


def variants(args) -> tuple[Variant, list[Variant], Variant | None]:
    train = Variant("train", "fgsm", args.fgsm_steps, "smart", 1, args.quantizer_steps)
    tests = [Variant("test", "pgd", args.steps, q, df, args.gina_steps if q == "gina" else args.quantizer_steps)
             for df in args.dfs for q in args.quantizers]
    retrain = Variant("train", "fgsm", args.fgsm_steps, "gina", 3, args.gina_steps) if args.gina_train else None
    return train, tests, retrain


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..data import check_labels, discover
    from ..models import load_model
    from ..progress import progress_bar

    torch.manual_seed(args.seed)
    out = Path(args.out)
    items = [i for i in discover(args.images) if i.label is not None][: args.limit]
    if not items:
        raise SystemExit("no labelled images found")
    model = load_model(args.model, device=args.device)
    check_labels(items, model.config.num_classes, args.model)
    out.mkdir(parents=True, exist_ok=True)
    rows = make_covers(items, out, size=args.size, train_crops=args.train_crops, test_crops=args.test_crops,
                       test_fraction=args.test_fraction, seed=args.seed)
    rows = classify(model, out, rows, args.batch_size)
    train, tests, retrain = variants(args)
    made: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    with progress_bar(not args.quiet) as bar:
        limits = {v.name: args.test_pairs for v in tests}
        limits[train.name] = args.train_pairs
        groups = [[train] + ([retrain] if retrain else []), tests]
        if retrain:
            limits[retrain.name] = args.gina_train
        for group in groups:
            made.update(make_variants(model, out, rows, group, batch_size=args.batch_size, limits=limits,
                                      progress=bar, seed=args.seed))
    attack_seconds = time.perf_counter() - t0
    test_rows = [r for r in rows if r["split"] == "test"]
    summary: dict[str, Any] = {
        "size": args.size, "model": args.model, "crops": len(rows), "test_crops": len(test_rows),
        "accuracy_test": (float(np.mean([int(r["prediction"]) == int(r["label"]) for r in test_rows]))
                          if test_rows else None),
        "attack_seconds": attack_seconds, "variants": {},
    }
    for name, vrows in made.items():
        ok = [int(r["success"]) for r in vrows]
        l2 = [float(r["l2"]) for r in vrows if int(r["success"])]
        summary["variants"][name] = {"pairs": int(sum(ok)), "attacked": len(vrows),
                                     "p_suc": float(np.mean(ok)) if ok else None,
                                     "mean_l2": float(np.mean(l2)) if l2 else None}
    if args.stage == "pairs":
        _write(out, summary, None)
        return summary
    summary["detection"] = detect_stage(args, out, train, tests, retrain, made)
    _write(out, summary, tables(summary, tests, train, retrain))
    return summary


def detect_stage(args, out: Path, train: Variant, tests: list[Variant], retrain: Variant | None,
                 made: dict[str, list[dict]]) -> dict[str, Any]:
    """Features, detectors trained on ``train`` (and ``retrain``), TPR₅ on every test variant."""
    from ..detect.features import extract_files
    from ..detect.linear import FldEnsembleDetector, RidgeDetector
    from ..detect.metrics import plot_roc, threshold_at_fpr

    cache = out / "features-cache"
    test_covers = sorted({r["file"] for v in tests for r in made[v.name]})
    result: dict[str, Any] = {"features_seconds": 0.0}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in args.features:
        t0 = time.perf_counter()

        def feats(files: list[str], folder: str) -> np.ndarray:
            # called only within this iteration of `kind`
            return extract_files([out / folder / f for f in files], kind,  # noqa: B023
                                 processes=args.processes, cache_dir=cache, progress=not args.quiet)
        clean = feats(test_covers, "covers")
        trainings = [train] + ([retrain] if retrain else [])
        adv_test = {v.name: feats(_ok(made[v.name]), f"adv/{v.name}") for v in tests}
        train_sets = {}
        for tv in trainings:
            files = _ok(made[tv.name])
            train_sets[tv.name] = (feats(files, "covers"), feats(files, f"adv/{tv.name}"))
        result["features_seconds"] += time.perf_counter() - t0
        for tv in trainings:
            cover_f, stego_f = train_sets[tv.name]
            for det_name in args.detectors:
                det = RidgeDetector(kind) if det_name == "ridge" else FldEnsembleDetector(
                    kind, seed=args.seed, L=args.fld_L, d_sub=args.fld_dsub, output="projection")
                t1 = time.perf_counter()
                det.fit(cover_f, stego_f)
                key = f"{kind}/{det_name}/{tv.name}"
                clean_scores = det.score(clean)
                thr = threshold_at_fpr(clean_scores, 0.05)
                fit_seconds = time.perf_counter() - t1
                train_accuracy = (float((np.mean(det.score(cover_f) <= 0) + np.mean(det.score(stego_f) > 0)) / 2)
                                  if det_name == "ridge" else None)
                entry: dict[str, Any] = {"train_pairs": len(cover_f), "fit_seconds": fit_seconds, "threshold": thr,
                         "fpr_clean": float(np.mean(clean_scores > thr)), "train_accuracy": train_accuracy,
                         "tpr5": {}}
                for v in tests:
                    s = det.score(adv_test[v.name])
                    entry["tpr5"][v.name] = float(np.mean(s > thr)) if len(s) else None
                    if tv is train:
                        curves[f"{det_name} · {v.quantizer} d_f={v.df_ch8}"] = (clean_scores, s)
                result[key] = entry
    if curves:
        plot_roc(curves, out / "roc.png", title=f"ROC on {args.size}px test crops (trained on FGSM + [12])")
    if args.srnet_epochs > 0:
        result["srnet"] = srnet_stage(args, out, train, tests, made, test_covers)
    return result


def srnet_stage(args, out: Path, train: Variant, tests: list[Variant], made, test_covers: list[str]) -> dict[str, Any]:
    """SRNet at a reduced scale on the CPU (``--srnet-epochs``), the learning-rate schedule scaled."""
    from ..detect.metrics import threshold_at_fpr
    from ..detect.srnet import SRNetDetector, train_srnet

    def load(folder: str, files: list[str]) -> np.ndarray:
        from PIL import Image
        return np.stack([np.asarray(Image.open(out / folder / f).convert("RGB")) for f in files])
    files = _ok(made[train.name])
    t0 = time.perf_counter()
    trained = train_srnet(load("covers", files), load(f"adv/{train.name}", files), epochs=args.srnet_epochs,
                          seed=args.seed, device=args.device, progress=not args.quiet)
    history = trained.history
    det = SRNetDetector(trained.model, device=args.device)
    clean = det.score(load("covers", test_covers))
    thr = threshold_at_fpr(clean, 0.05)
    out_d = {"epochs": args.srnet_epochs, "train_seconds": time.perf_counter() - t0, "tpr5": {},
             "final_train_accuracy": history[-1].get("accuracy") if history else None}
    for v in tests:
        s = det.score(load(f"adv/{v.name}", _ok(made[v.name])))
        out_d["tpr5"][v.name] = float(np.mean(s > thr))
    return out_d


def _ok(rows: list[dict]) -> list[str]:
    return [r["file"] for r in rows if int(r["success"])]


def tables(summary: dict[str, Any], tests: list[Variant], train: Variant, retrain: Variant | None) -> str:
    """Markdown: Table 8.3 (ours beside the thesis's) and Table 8.4."""
    det = summary.get("detection", {})
    keys = [k for k in det if k.count("/") == 2 and k.endswith(train.name)]
    head = "| quantizer | d_f (Ch. 8) | P_suc % | mean L2 | " + " | ".join(
        f"TPR₅ {k.split('/')[0]} {k.split('/')[1]} %" for k in keys) + (
        " | TPR₅ SRNet % |" if "srnet" in det else " |") + " thesis P_suc / L2 / SCRMQ1 / SRNet |"
    lines = ["### Table 8.3: trained on FGSM + [12], tested on PGD2 + each quantizer", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for v in tests:
        s = summary["variants"][v.name]
        cells = [f"{100 * det[k]['tpr5'][v.name]:.1f}" if det[k]["tpr5"].get(v.name) is not None else "–" for k in keys]
        if "srnet" in det:
            cells.append(f"{100 * det['srnet']['tpr5'][v.name]:.1f}")
        th = THESIS_83.get((v.quantizer, v.df_ch8))
        label = "[12] (smart)" if v.quantizer == "smart" else v.quantizer
        lines.append(f"| {label} | {v.df_ch8} | {100 * s['p_suc']:.1f} | {s['mean_l2']:.1f} | " + " | ".join(cells)
                     + " | " + (" / ".join(str(t) for t in th) if th else "–") + " |")
    if retrain:
        keys4 = [k for k in det if k.count("/") == 2 and k.endswith(retrain.name)]
        lines += ["", "### Table 8.4: retrained on FGSM + GINA (d_f = 4)", "",
                  "| quantizer | d_f | " + " | ".join(f"TPR₅ {k.split('/')[0]} {k.split('/')[1]} %" for k in keys4)
                  + " | thesis SCRMQ1 |", "|" + "---|" * (2 + len(keys4) + 1)]
        for v in tests:
            cells = [f"{100 * det[k]['tpr5'][v.name]:.1f}" for k in keys4]
            thesis = THESIS_84.get((v.quantizer, v.df_ch8), "–")
            lines.append(f"| {v.quantizer} | {v.df_ch8} | " + " | ".join(cells) + f" | {thesis} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, summary: dict[str, Any], table: str | None) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with open(out / "variants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "attacked", "pairs", "p_suc", "mean_l2"])
        for name, v in summary["variants"].items():
            w.writerow([name, v["attacked"], v["pairs"], v["p_suc"], v["mean_l2"]])
    if table:
        (out / "table.md").write_text(table)


@experiment("stego-table", "Tables 8.3-8.4: detectability of adversarial files per quantizer (steganalysis)")
def add_parser(subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``stego-table`` to ``advimage experiment``'s subparsers."""
    from ..cli_types import positive_int, positive_int_or_auto
    from ..detect import DETECTORS, FEATURE_KINDS
    from .options import experiment_parser

    p = experiment_parser(subparsers, name, help, out="runs/stego", limit=400, batch_size=16, steps=100)
    p.add_argument("--size", type=positive_int, default=128, help="crop side in pixels (the model sees it as is)")
    p.add_argument("--train-crops", type=positive_int, default=4, help="crops per training photo")
    p.add_argument("--test-crops", type=positive_int, default=4, help="crops per test photo")
    p.add_argument("--test-fraction", type=float, default=0.35, help="share of the photos held out for testing")
    p.add_argument("--train-pairs", type=positive_int, default=None, help="at most this many training crops")
    p.add_argument("--test-pairs", type=positive_int, default=None, help="at most this many test crops")
    p.add_argument("--fgsm-steps", type=positive_int, default=30, help="FGSM's ε trials (forward passes)")
    p.add_argument("--quantizer-steps", type=positive_int, default=18, help="λ trials of each quantizer "
                   "(thesis: log2 n = 18)")
    p.add_argument("--gina-steps", type=positive_int, default=6, help="GINA's λ trials per lattice")
    p.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS), choices=QUANTIZERS,
                   help="quantizers of the test pairs")
    p.add_argument("--dfs", nargs="+", type=int, default=[1, 3], help="df in advimage's convention "
                   "(Ch. 8's d_f = df + 1)")
    p.add_argument("--gina-train", type=int, default=600, help="training crops for Table 8.4 (0: skip)")
    p.add_argument("--features", nargs="+", default=["scrmq1"], choices=list(FEATURE_KINDS),
                   help="steganalysis features")
    p.add_argument("--detectors", nargs="+", default=["ridge", "fld"],
                   choices=[n for n in DETECTORS.names() if DETECTORS.get(n).inputs == "features"],
                   help="classifiers trained on the features (SRNet: --srnet-epochs)")
    p.add_argument("--fld-L", type=positive_int_or_auto, default="automatic", help="FLD ensemble: base learners")
    p.add_argument("--fld-dsub", type=positive_int_or_auto, default="automatic",
                   help="FLD ensemble: subspace dimension")
    p.add_argument("--srnet-epochs", type=int, default=0, help="SRNet epochs on the training pairs (0: skip)")
    p.add_argument("--processes", type=positive_int, default=2, help="feature-extraction processes")
    p.add_argument("--stage", choices=["pairs", "all"], default="all", help="stop after making the pairs")
    p.set_defaults(experiment_main=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..progress import stdout_console

    if not 0 < args.test_fraction < 1:
        raise SystemExit("--test-fraction must be in (0, 1)")
    if any(d < 1 for d in args.dfs):
        raise SystemExit("--dfs must be >= 1")
    summary = run(args)
    out = Path(args.out)
    console = stdout_console()
    if (out / "table.md").exists() and args.stage == "all":
        console.print((out / "table.md").read_text())
    else:
        for name, v in summary["variants"].items():
            console.print(f"{name}: {v['pairs']}/{v['attacked']} pairs, mean L2 {v['mean_l2']}")
    console.print(f"written to {out}")
    return 0
