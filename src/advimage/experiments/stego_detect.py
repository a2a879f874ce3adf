"""The detection half of ``advimage experiment stego-table``: features, detectors, TPR₅.

Every detector is trained on the training pairs (FGSM + [12]; for Table 8.4 also FGSM + GINA),
its threshold τ is the 95th percentile of its scores on the clean test covers (the crops the
test files were made from), and TPR₅ of a test variant is the share of its files (those that fool
the model) scored above τ. Everything here is deterministic given the files: features are cached
by content, ridge is closed form, the FLD ensemble is seeded, SRNet resumes from its checkpoints.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stego_pairs import Variant


def ok_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """(cover file, adversarial file) of the rows whose file fools the model."""
    return [(r["file"], r["output"]) for r in rows if int(r["success"])]


@dataclass
class Guard:
    """The classifier composed with a detector, and the criterion of the adaptive attack."""

    model: Any
    criterion: Any


class Detection:
    """Detectors of one run (``args``: stego-table's options, ``plan``: its variants, ``made``:
    the rows of every variant made so far)."""

    def __init__(self, args: argparse.Namespace, out: Path, plan, made: dict[str, list[dict]]) -> None:
        self.args, self.out, self.plan, self.made = args, out, plan, made
        self.cache = out / "features-cache"
        self.covers = sorted({r["file"] for v in plan.tests for r in made[v.name]})
        self.fitted: dict[str, tuple[Any, float]] = {}   # key -> (detector, τ)
        self.scores: dict[tuple[str, str], np.ndarray] = {}  # (key, variant) -> scores of ok_pairs' files
        self.srnet_model: Any = None  # SRNetDetector once trained
        self.srnet_threshold: float | None = None

    # -- rich models ---------------------------------------------------------------------------
    def _features(self, kind: str, folder: str, files: list[str]) -> np.ndarray:
        from ..detect.features import extract_files

        return extract_files([self.out / folder / f for f in files], kind, processes=self.args.processes,
                             cache_dir=self.cache, progress=not self.args.quiet)

    def _adv_features(self, kind: str, v: Variant) -> np.ndarray:
        return self._features(kind, f"adv/{v.name}", [a for _, a in ok_pairs(self.made[v.name])])

    def linear(self) -> dict[str, Any]:
        """Ridge / FLD on every feature kind, trained on the training pairs (and the retraining
        pairs): {"kind/detector/training variant": {threshold, tpr5 per test variant, ...}}."""
        from ..detect.linear import FldEnsembleDetector, RidgeDetector
        from ..detect.metrics import plot_roc, threshold_at_fpr

        args, result = self.args, {}
        trainings = [self.plan.train] + ([self.plan.retrain] if self.plan.retrain else [])
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for kind in args.features:
            clean = self._features(kind, "covers", self.covers)
            adv = {v.name: self._adv_features(kind, v) for v in self.plan.tests}
            for tv in trainings:
                pairs = ok_pairs(self.made[tv.name])
                cover_f = self._features(kind, "covers", [c for c, _ in pairs])
                stego_f = self._features(kind, f"adv/{tv.name}", [a for _, a in pairs])
                for name in args.detectors:
                    det = RidgeDetector(kind) if name == "ridge" else FldEnsembleDetector(
                        kind, seed=args.seed, L=args.fld_L, d_sub=args.fld_dsub, output="projection")
                    det.fit(cover_f, stego_f)
                    key = f"{kind}/{name}/{tv.name}"
                    clean_scores = det.score(clean)
                    thr = threshold_at_fpr(clean_scores, 0.05)
                    self.fitted[key] = (det, thr)
                    own = (np.mean(det.score(cover_f) <= thr) + np.mean(det.score(stego_f) > thr)) / 2
                    entry: dict[str, Any] = {"train_pairs": len(pairs), "threshold": thr,
                                             "fpr_clean": float(np.mean(clean_scores > thr)),
                                             "train_accuracy_at_threshold": float(own), "tpr5": {}}
                    for v in self.plan.tests:
                        s = det.score(adv[v.name]) if len(adv[v.name]) else np.zeros(0)
                        self.scores[(key, v.name)] = s
                        entry["tpr5"][v.name] = float(np.mean(s > thr)) if len(s) else None
                        if tv is self.plan.train and v in self.plan.tests83:
                            curves[f"{kind} {name} · {v.quantizer} d_f={v.df_ch8}"] = (clean_scores, s)
                    result[key] = entry
        if curves:
            plot_roc(curves, self.out / "roc.png", title=f"ROC on {args.size}px test crops (trained on FGSM + [12])")
        return result

    # -- SRNet ---------------------------------------------------------------------------------
    def _images(self, folder: str, files: list[str]) -> np.ndarray:
        from ..detect.features import read_rgb

        return np.stack([read_rgb(self.out / folder / f) for f in files])

    def srnet(self) -> dict[str, Any]:
        """SRNet trained on the training pairs (``--srnet-epochs``, checkpoint in OUT/srnet/e<epochs>-b<batch>,
        so an interrupted training resumes), then TPR₅ per test variant."""
        from ..detect.metrics import threshold_at_fpr
        from ..detect.srnet import SRNetDetector, train_srnet

        args = self.args
        pairs = ok_pairs(self.made[self.plan.train.name])
        trained = train_srnet(self._images("covers", [c for c, _ in pairs]),
                              self._images(f"adv/{self.plan.train.name}", [a for _, a in pairs]),
                              epochs=args.srnet_epochs, batch_pairs=args.srnet_batch_pairs, seed=args.seed,
                              device=args.device, progress=not args.quiet,
                              checkpoint=self.out / "srnet" / f"e{args.srnet_epochs}-b{args.srnet_batch_pairs}")
        det = SRNetDetector(trained.model, device=args.device)
        self.srnet_model = det
        clean = det.score(self._images("covers", self.covers))
        thr = threshold_at_fpr(clean, 0.05)
        self.srnet_threshold = thr
        out: dict[str, Any] = {"epochs": args.srnet_epochs, "train_pairs": len(pairs), "threshold": thr,
                               "history": trained.history, "tpr5": {}}
        for v in self.plan.tests:
            files = [a for _, a in ok_pairs(self.made[v.name])]
            s = det.score(self._images(f"adv/{v.name}", files)) if files else np.zeros(0)
            self.scores[("srnet", v.name)] = s
            out["tpr5"][v.name] = float(np.mean(s > thr)) if len(s) else None
        return out

    # -- the adaptive attacker -------------------------------------------------------------------
    def guard(self, model) -> Guard:
        """The classifier with the trained SRNet and its τ (white box: the attacker knows both)."""
        from ..criteria import Misclassification
        from ..detect.adaptive import DetectorGuard, Undetected, srnet_score

        if self.srnet_model is None or self.srnet_threshold is None:
            raise RuntimeError("the adaptive attack needs the trained SRNet (srnet() first)")
        composed = DetectorGuard(model, srnet_score(self.srnet_model.model), self.srnet_threshold)
        weight = self.args.adaptive_weight
        return Guard(composed, lambda y: Undetected(Misclassification(y), weight=weight))

    def adaptive(self) -> dict[str, Any]:
        """TPR₅ of every detector on the adaptive variants' files (same thresholds)."""
        out: dict[str, Any] = {"adaptive": {}}
        for v in self.plan.adaptive:
            files = [a for _, a in ok_pairs(self.made[v.name])]
            entry: dict[str, float | None] = {}
            for key, (det, thr) in self.fitted.items():
                s = self._features(det.features, f"adv/{v.name}", files) if files else None
                entry[key] = float(np.mean(det.score(s) > thr)) if s is not None else None
            if self.srnet_model is not None and self.srnet_threshold is not None:
                s2 = self.srnet_model.score(self._images(f"adv/{v.name}", files)) if files else None
                entry["srnet"] = float(np.mean(s2 > self.srnet_threshold)) if s2 is not None else None
            out["adaptive"][v.name] = entry
        return out

    def selection(self) -> dict[str, Any]:
        """A detector-aware attacker without gradients: per test crop, of its Table 8.3 files that
        fool the model, the one this detector scores lowest. Per detector (trained on FGSM + [12]):
        crops with a file, and TPR₅ of the chosen files."""
        tests = self.plan.tests83
        if not tests:
            return {}
        keys = [k for k in self.fitted if k.endswith(self.plan.train.name)] + (
            ["srnet"] if self.srnet_threshold is not None else [])
        result: dict[str, Any] = {}
        for key in keys:
            thr = self.fitted[key][1] if key != "srnet" else self.srnet_threshold
            best: dict[str, float] = {}
            for v in tests:
                covers = [c for c, _ in ok_pairs(self.made[v.name])]
                for c, s in zip(covers, self.scores[(key, v.name)]):
                    best[c] = min(best.get(c, np.inf), float(s))
            chosen = np.array([best[c] for c in sorted(best)])
            result[key] = {"crops": len(chosen), "attacked": len(self.made[tests[0].name]),
                           "tpr5": float(np.mean(chosen > thr)) if len(chosen) else None}
        return result
