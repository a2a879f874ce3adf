"""``advimage detect``: steganalysis detectors of adversarial images (thesis §8.4).

Wiring in ``advimage/cli.py``: ``add_parser(sub)`` in ``build_parser`` and
``if args.command == "detect": return run(args)`` in ``main``.

Exit status: 0 done, 1 an image could not be read, 2 bad options or inputs (pair set, detector folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NoReturn

from ..cli_support import HelpFormatter
from ..cli_types import positive_int as _positive
from . import DETECTORS
from .features import KINDS

FEATURE_KINDS = tuple(KINDS)
CACHE_NAME = "features-cache"

EXAMPLES = """examples:
  advimage detect features pairs/ --kind scrmq1 --processes 8        # cached in pairs/features-cache
  advimage detect train pairs/ --detector ridge --features scrmq1 --out det/scrmq1-ridge
  advimage detect train pairs/ --detector srnet --epochs 180 --out det/srnet --device cuda --checkpoint det/srnet-ck
  advimage detect evaluate det/scrmq1-ridge pairs/ --out det/scrmq1-ridge/eval
  advimage detect score det/srnet photo_adv.png photo.png --json
"""


def _fpr(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), got {v}")
    return v


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--processes", type=_positive, default=1, help="worker processes for feature extraction")
    p.add_argument("--cache", default=None,
                   help=f"feature cache folder (default: PAIRSET/{CACHE_NAME}; none for `score`)")
    if device:
        p.add_argument("--device", default=None, help="SRNet: cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``detect`` subcommand (features | train | score | evaluate) to ``subparsers``."""
    p = subparsers.add_parser("detect", help="steganalysis detectors of adversarial images (SRM, SCRMQ1, SRNet)",
                              description="Train and evaluate detectors of adversarial PNG images on a pair set "
                                          "(a folder with pairs.csv: source,cover,adversarial,split).",
                              epilog=EXAMPLES, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="detect_command", required=True)
    f = sub.add_parser("features", help="extract and cache rich-model features of every image of a pair set",
                       formatter_class=HelpFormatter)
    f.add_argument("pairset", help="folder with pairs.csv")
    f.add_argument("--kind", default="scrmq1", choices=FEATURE_KINDS, help="srm: 34,671-d on luminance; "
                   "scrmq1: 18,157-d colour")
    _common(f, device=False)
    t = sub.add_parser("train", help="train a detector on the train split", formatter_class=HelpFormatter)
    t.add_argument("pairset", help="folder with pairs.csv")
    t.add_argument("--detector", default="ridge", choices=DETECTORS.names(),
                   help="; ".join(f"{n}: {DETECTORS.description(n)}" for n in DETECTORS.names()))
    t.add_argument("--features", default=None, choices=FEATURE_KINDS,
                   help="feature kind of ridge and fld (default scrmq1); not for srnet")
    t.add_argument("--out", required=True, help="detector folder to write (detector.json + weights)")
    t.add_argument("--epochs", type=_positive, default=180,
                   help="SRNet epochs (lr 1e-3 for the first 100/180 of them, then 1e-4)")
    t.add_argument("--seed", type=int, default=0, help="random seed (SRNet, FLD ensemble)")
    t.add_argument("--checkpoint", default=None, help="SRNet: folder for a checkpoint after every epoch; "
                   "the same command again resumes after the last one")
    _common(t)
    s = sub.add_parser("score", help="score image files with a saved detector", formatter_class=HelpFormatter)
    s.add_argument("detector_dir", help="detector folder (detector.json)")
    s.add_argument("files", nargs="+", help="image files")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(s)
    e = sub.add_parser("evaluate", help="TPR at 5%% FPR, AUC, ROC on the test split", formatter_class=HelpFormatter)
    e.add_argument("detector_dir", help="detector folder (detector.json)")
    e.add_argument("pairset", help="folder with pairs.csv")
    e.add_argument("--out", default=None, help="output folder (default: DETECTOR_DIR/evaluation)")
    e.add_argument("--fpr", type=_fpr, default=0.05, help="false-positive rate of the operating point")
    _common(e)
    return p


def _fail(msg: str, code: int = 2) -> NoReturn:
    print(f"advimage detect: {msg}", file=sys.stderr)
    raise SystemExit(code)


def _pairs(folder: str, split: str | None = None):
    from .pairs import PairSetError, read_pairs
    from .pairs import split as select

    try:
        pairs = read_pairs(folder)
    except PairSetError as exc:
        _fail(str(exc))
    if split is not None:
        pairs = select(pairs, split)
        if not pairs:
            _fail(f"{folder}: no pairs in the {split} split")
    return pairs


def _cache(args, pairset: str | None) -> Path | None:
    if args.cache:
        return Path(args.cache)
    return Path(pairset) / CACHE_NAME if pairset is not None else None


def _device(args) -> str:
    from ..cli_support import check_device

    return check_device(args.device)


def _load(directory: str, args):
    from .store import DetectorLoadError, load, read_meta

    try:
        device = _device(args) if read_meta(directory)["type"] == "srnet" else None
        return load(directory, device=device)
    except DetectorLoadError as exc:
        _fail(str(exc))


def _features(args) -> int:
    from .features import extract_files

    pairs = _pairs(args.pairset)
    files = list(dict.fromkeys(f for p in pairs for f in (p.cover, p.adversarial)))
    t0 = time.perf_counter()
    x = extract_files(files, args.kind, processes=args.processes, cache_dir=_cache(args, args.pairset),
                      progress=not args.quiet)
    print(f"{len(files)} files, {args.kind} {x.shape[1]}-d features, {time.perf_counter() - t0:.1f} s; "
          f"cache {_cache(args, args.pairset)}")
    return 0


def _train(args) -> int:
    from ..cli_support import check_out_dir
    from .store import annotate

    if args.checkpoint and args.detector != "srnet":
        _fail("--checkpoint applies to srnet")
    on_pixels = DETECTORS.get(args.detector).inputs == "pixels"
    if on_pixels and args.features is not None:
        _fail(f"--features applies to detectors on features; {args.detector} reads pixels")
    out = check_out_dir(args.out)
    pairs = _pairs(args.pairset, "train")
    covers, advs = [p.cover for p in pairs], [p.adversarial for p in pairs]
    t0 = time.perf_counter()
    if args.detector == "srnet":  # each detector's constructor takes its own settings
        from .srnet import SRNetDetector

        extra = {"checkpoint": args.checkpoint} if args.checkpoint else {}
        det = SRNetDetector(device=_device(args), epochs=args.epochs, seed=args.seed, progress=not args.quiet,
                            **extra)
        det.fit(covers, advs)
    else:
        from .features import extract_files
        from .linear import FldEnsembleDetector, RidgeDetector

        kind = args.features or "scrmq1"
        cache = _cache(args, args.pairset)
        xc = extract_files(covers, kind, processes=args.processes, cache_dir=cache, progress=not args.quiet)
        xa = extract_files(advs, kind, processes=args.processes, cache_dir=cache, progress=not args.quiet)
        det = RidgeDetector(kind) if args.detector == "ridge" else FldEnsembleDetector(kind, seed=args.seed)
        det.fit(xc, xa)
    seconds = time.perf_counter() - t0
    det.save(out)
    annotate(out, training={"pairset": str(Path(args.pairset).resolve()), "pairs": len(pairs),
                            "seconds": round(seconds, 2)})
    print(f"{args.detector} ({det.features or 'pixels'}) trained on {len(pairs)} pairs in {seconds:.1f} s -> {out}")
    return 0


def _score(args) -> int:
    from .scoring import score_files

    det = _load(args.detector_dir, args)
    scores = score_files(det, args.files, processes=args.processes, cache_dir=_cache(args, None),
                         progress=not (args.quiet or args.json))
    rows = [{"file": str(f), "score": float(s)} for f, s in zip(args.files, scores)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["file"]) for r in rows)
        print(f"{'file':{width}s}  score ({det.type}, higher = more likely adversarial)")
        for r in rows:
            print(f"{r['file']:{width}s}  {r['score']:+.6g}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, write_evaluation
    from .scoring import score_files

    det = _load(args.detector_dir, args)
    pairs = _pairs(args.pairset, "test")
    cache = _cache(args, args.pairset)
    kw = dict(processes=args.processes, cache_dir=cache, progress=not args.quiet)
    clean = score_files(det, [p.cover for p in pairs], **kw)
    adv = score_files(det, [p.adversarial for p in pairs], **kw)
    success = None
    if all(p.success is not None for p in pairs):
        import numpy as np
        success = np.array([p.success for p in pairs])
    elif any(p.success is not None for p in pairs):
        _fail(f"{args.pairset}: the success column is empty for some test pairs")
    ev = evaluate(clean, adv, detector=det.type, features=det.features, fpr=args.fpr, success=success, pairs=pairs)
    out = Path(args.out) if args.out else Path(args.detector_dir) / "evaluation"
    paths = write_evaluation(ev, out)
    print(ev.markdown(), end="")
    print(f"threshold {ev.threshold:.6g} (score > threshold: detected); {paths['json']}, {paths['roc']}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``advimage detect``. Returns the exit code."""
    from .features import FeatureError

    handlers = {"features": _features, "train": _train, "score": _score, "evaluate": _evaluate}
    try:
        return handlers[args.detect_command](args)
    except FeatureError as exc:
        print(f"advimage detect: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. too few pairs for a detector, images of several sizes for SRNet
        _fail(str(exc))
    except KeyboardInterrupt:
        print("\nadvimage detect: interrupted (cached features are kept)", file=sys.stderr)
        return 130
