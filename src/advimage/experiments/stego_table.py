"""Tables 8.1-8.4 (thesis §8.4), and the adaptive attacker of §8.5, from one recorded command.

1. Pairs (:mod:`.stego_pairs`): crops of the photos, split by photo; training pairs from
   best-effort FGSM + the Ch. 7 quantizer ("[12]"); test pairs on the correctly classified test
   crops: best-effort PGD2 + each quantizer (Ch. 7 ``smart``, ``hill``, ``mipod``, ``gina``) at
   Ch. 8's d_f = 2 and 4 (``df`` 1 and 3 here) for Tables 8.1 and 8.3, FGSM / CW + [12] and DDN
   (integer output, ``round`` is then the identity) for Table 8.2; for Table 8.4, training pairs
   from FGSM + GINA at d_f = 4; with ``--adaptive srnet``, PGD2 + [12] / GINA against the
   classifier and the trained SRNet together (:mod:`advimage.detect.adaptive`).
2. Detection (:mod:`.stego_detect`): SRM and SCRMQ1 features of every file (cached by content),
   ridge and FLD-ensemble detectors, SRNet (``--srnet-epochs``, checkpointed), TPR₅ with the
   threshold at the clean test covers' 95th percentile.
3. Tables (:mod:`.stego_report`): Markdown, the canonical command in each table's header.

One command, one folder: ``settings.json`` records every option that decides a number; a second
call needs ``--resume`` and the same options, reuses every file, row (in the folder's result
store, :mod:`.stego_rows`), feature and SRNet epoch already made, and writes the same table bytes.
The model sees the crops at their own size
(``--size``, no resize layer): compute is what limits this experiment on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cli_support import fail
from .registry import experiment
from .stego_pairs import Variant, classify, make_covers, make_variants
from .stego_rows import StegoRows

TABLES = ("8.1", "8.2", "8.3", "8.4")
QUANTIZERS = ("smart", "hill", "mipod", "gina")
ADAPTIVE = ("srnet",)
#: options that do not change a number: not recorded, not in the command
UNRECORDED = ("resume", "quiet", "processes", "attack", "df", "experiment_main")
#: options of the stages made after the pairs, from them: ``--resume`` may change them (the pairs,
#: features and linear detectors are reused; SRNet and the adaptive files are keyed by them), and
#: ``--stage`` (where to stop)
EXTENDABLE = ("srnet_epochs", "srnet_batch_pairs", "adaptive", "adaptive_weight", "adaptive_pairs", "stage")


@dataclass
class Plan:
    """The variants a command makes: training pairs (FGSM + [12]), the retraining pairs of Table
    8.4 (FGSM + GINA d_f 4, or None), the test variants of Tables 8.3 and 8.2 (a variant in both
    is made once) and the adaptive ones."""

    train: Variant
    retrain: Variant | None
    tests83: list[Variant]
    tests82: list[Variant]
    adaptive: list[Variant] = field(default_factory=list)

    @property
    def tests(self) -> list[Variant]:
        """Every plain test variant, once, Table 8.3's first."""
        seen: dict[str, Variant] = {}
        for v in self.tests83 + self.tests82:
            seen.setdefault(v.name, v)
        return list(seen.values())

    def groups(self) -> list[list[Variant]]:
        """Variants grouped by (split, attack, budget): each group's batches are attacked once."""
        out: dict[tuple[str, str, int], list[Variant]] = {}
        for v in [self.train] + ([self.retrain] if self.retrain else []) + self.tests:
            out.setdefault((v.split, v.attack, v.steps), []).append(v)
        return list(out.values())


def plan(args: argparse.Namespace) -> Plan:
    qs, gs = args.quantizer_steps, args.gina_steps
    train = Variant("train", "fgsm", args.fgsm_steps, "smart", 1, qs)
    retrain = Variant("train", "fgsm", args.fgsm_steps, "gina", 3, gs) if "8.4" in args.tables else None
    tests83 = [Variant("test", "pgd", args.steps, q, df, gs if q == "gina" else qs)
               for df in args.dfs for q in args.quantizers] if {"8.3", "8.4"} & set(args.tables) else []
    pgd12 = Variant("test", "pgd", args.steps, "smart", 1, qs)
    tests82 = ([Variant("test", "fgsm", args.fgsm_steps, "smart", 1, qs), pgd12,
                Variant("test", "cw", args.steps, "smart", 1, qs), Variant("test", "ddn", args.steps, "round", 1, qs)]
               if "8.2" in args.tables else [])
    if "8.1" in args.tables and pgd12.name not in {v.name for v in tests83 + tests82}:
        tests82.append(pgd12)
    guard = f"{args.adaptive}-e{args.srnet_epochs}-b{args.srnet_batch_pairs}-w{args.adaptive_weight:g}"
    adaptive = [Variant("test", "pgd", args.steps, q, df, gs if q == "gina" else qs, guard=guard)
                for q, df in (("smart", 1), ("gina", 3))] if args.adaptive else []
    return Plan(train, retrain, tests83, tests82, adaptive)


# -- the record: one command per folder ---------------------------------------------------------
def recorded(args: argparse.Namespace, parser_dests: list[str]) -> dict[str, Any]:
    """The options that decide the numbers, in the parser's order (torch's thread count included:
    a CPU's convolutions may round differently with another)."""
    out = {d: getattr(args, d) for d in parser_dests if d not in UNRECORDED and d != "out"}
    return json.loads(json.dumps(out))


def command_line(args: argparse.Namespace, parser: list[tuple[str, str, bool]]) -> str:
    """The canonical command: every recorded option spelled out (defaults too), so that it alone
    says what was run. parser: (dest, option string, is a flag) in the parser's order."""
    words = ["advimage", "experiment", "stego-table"]
    for dest, option, flag in parser:
        value = getattr(args, dest)
        if dest in UNRECORDED or value is None or (flag and not value):
            continue
        if not option:  # the positional image folders
            words += [str(v) for v in value]
        elif flag:
            words.append(option)
        else:
            words += [option, *(str(v) for v in (value if isinstance(value, list) else [value]))]
    return shlex.join(words)


def row_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The settings every stored row of a run is keyed by: its record less :data:`EXTENDABLE` (what
    ``--resume`` keeps: the same hash on every resume; the adaptive variants' names say their SRNet)."""
    return {"experiment": "stego-table", **{k: v for k, v in record.items() if k not in EXTENDABLE}}


def check_record(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """First call: write ``settings.json``. Later calls: only with ``--resume`` and the same settings
    (those of :data:`EXTENDABLE` may change: the record then says the latest)."""
    path = out / "settings.json"
    if path.is_file():
        if not resume:
            fail(f"{out} already holds a run: pass --resume to continue it (same options), "
                 "or choose another --out")
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if diff and all(k in EXTENDABLE for k in diff):
            path.write_text(json.dumps(settings, indent=1))
            return
        diff = [k for k in diff if k not in EXTENDABLE]
        if diff:
            fail(f"{out} was made with other options ({', '.join(diff)}): "
                 + "; ".join(f"{k}: {before.get(k)!r} then, {settings.get(k)!r} now" for k in diff))
        return
    if (out / "crops.csv").exists():
        fail(f"{out} holds pairs without settings.json (an older run): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


# -- the run -------------------------------------------------------------------------------------
def run(args: argparse.Namespace, command: str = "", record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole experiment into ``args.out``; record: the settings to check against (or write to)
    ``settings.json`` once the images and labels are known good (:func:`check_record`), and to key
    the stored rows by (:func:`row_settings`; default: ``args``' recorded options)."""
    import torch

    from ..data import check_labels, discover
    from ..models import load_model

    torch.manual_seed(args.seed)
    out = Path(args.out)
    items = [i for i in discover(args.images) if i.label is not None][: args.limit]
    if not items:
        fail("no labelled images found")
    model = load_model(args.model, device=args.device)
    check_labels(items, model.config.num_classes, args.model)
    if record is not None:
        check_record(out, record, args.resume)
    else:
        record = recorded(args, [d for d, _, _ in _PARSER])
    with StegoRows(out, args.model, record, row_settings(record)) as store:
        return _run(args, out, model, items, store, command)


def _run(args: argparse.Namespace, out: Path, model, items: list, store: StegoRows, command: str) -> dict[str, Any]:
    from ..progress import progress_bar
    from . import stego_detect, stego_report

    rows = make_covers(items, out, size=args.size, train_crops=args.train_crops, test_crops=args.test_crops,
                       test_fraction=args.test_fraction, seed=args.seed)
    rows = classify(model, out, rows, args.batch_size)
    p = plan(args)
    limits: dict[str, int | None] = {v.name: args.test_pairs for v in p.tests}
    limits.update({v.name: args.adaptive_pairs or args.test_pairs for v in p.adaptive})
    limits[p.train.name] = args.train_pairs
    if p.retrain:
        limits[p.retrain.name] = args.gina_train
    made: dict[str, list[dict]] = {}
    with progress_bar(not args.quiet) as bar:
        for group in p.groups():
            made.update(make_variants(model, out, rows, group, store=store, batch_size=args.batch_size,
                                      limits=limits, progress=bar, seed=args.seed))
    summary = summarize(args, rows, made)
    if args.stage == "pairs":
        _write(out, summary, None)
        return summary
    detection = stego_detect.Detection(args, out, p, made)
    summary["detection"] = detection.linear()
    if args.srnet_epochs > 0:
        summary["detection"]["srnet"] = detection.srnet()
    if p.adaptive:
        guard = detection.guard(model)
        with progress_bar(not args.quiet) as bar:
            made.update(make_variants(model, out, rows, p.adaptive, store=store, batch_size=args.batch_size,
                                      limits=limits, progress=bar, seed=args.seed, attacked=guard.model,
                                      criterion=guard.criterion))
        summary["variants"].update(summarize(args, rows, {v.name: made[v.name] for v in p.adaptive})["variants"])
        summary["detection"].update(detection.adaptive())
    summary["detection"]["selection"] = detection.selection()
    _write(out, summary, stego_report.tables(summary, p, command, args.tables))
    return summary


def summarize(args, rows: list[dict], made: dict[str, list[dict]]) -> dict[str, Any]:
    """Per variant: pairs (files that fool the model), attacked crops, P_suc, mean L2, and the
    test crops' accuracy; only numbers that the rows decide (no timing: the tables are reproducible)."""
    test_rows = [r for r in rows if r["split"] == "test"]
    summary: dict[str, Any] = {
        "size": args.size, "model": args.model, "crops": len(rows), "test_crops": len(test_rows),
        "test_correct": int(sum(int(r["prediction"]) == int(r["label"]) for r in test_rows)), "variants": {},
    }
    for name, vrows in made.items():
        ok = [int(r["success"]) for r in vrows]
        l2 = [float(r["l2"]) for r in vrows if int(r["success"])]
        seconds = [float(r["attack_seconds"]) + float(r["quantizer_seconds"]) for r in vrows]
        summary["variants"][name] = {"pairs": int(sum(ok)), "attacked": len(vrows),
                                     "p_suc": float(np.mean(ok)) if ok else None,
                                     "mean_l2": float(np.mean(l2)) if l2 else None,
                                     "seconds_per_crop": float(np.mean(seconds)) if seconds else None}
    return summary


def _write(out: Path, summary: dict[str, Any], tables: dict[str, str] | None) -> None:
    import csv

    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with open(out / "variants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "attacked", "pairs", "p_suc", "mean_l2"])
        for name, v in summary["variants"].items():
            w.writerow([name, v["attacked"], v["pairs"], v["p_suc"], v["mean_l2"]])
    if tables:
        for name, text in tables.items():
            (out / f"table-{name}.md").write_text(text)
        (out / "tables.md").write_text("\n".join(tables.values()))


# -- the command line ----------------------------------------------------------------------------
_PARSER: list[tuple[str, str, bool]] = []  # (dest, option, flag) of stego-table's options, in order


@experiment("stego-table", "Tables 8.1-8.4: robustness, detectability of adversarial files per attack and per "
            "quantizer (steganalysis), one recorded command")
def add_parser(subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """Add ``stego-table`` to ``advimage experiment``'s subparsers."""
    from ..cli_types import positive_int, positive_int_or_auto
    from ..detect import DETECTORS, FEATURE_KINDS
    from .options import experiment_parser

    p = experiment_parser(subparsers, name, help, out="runs/stego", limit=400, batch_size=16, steps=100)
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES, help="tables to make")
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
                   help="quantizers of Table 8.3's test pairs")
    p.add_argument("--dfs", nargs="+", type=int, default=[1, 3], help="df in advimage's convention "
                   "(Ch. 8's d_f = df + 1)")
    p.add_argument("--gina-train", type=positive_int, default=600, help="training crops for Table 8.4")
    p.add_argument("--features", nargs="+", default=["srm", "scrmq1"], choices=list(FEATURE_KINDS),
                   help="steganalysis features")
    p.add_argument("--detectors", nargs="+", default=["ridge", "fld"],
                   choices=[n for n in DETECTORS.names() if DETECTORS.get(n).inputs == "features"],
                   help="classifiers trained on the features (SRNet: --srnet-epochs)")
    p.add_argument("--fld-L", type=positive_int_or_auto, default="automatic", help="FLD ensemble: base learners")
    p.add_argument("--fld-dsub", type=positive_int_or_auto, default="automatic",
                   help="FLD ensemble: subspace dimension")
    p.add_argument("--srnet-epochs", type=int, default=0, help="SRNet epochs on the training pairs (0: no SRNet "
                   "column); checkpointed after each epoch in OUT/srnet, --resume continues")
    p.add_argument("--srnet-batch-pairs", type=positive_int, default=8, help="SRNet: pairs per batch")
    p.add_argument("--adaptive", choices=ADAPTIVE, default=None, help="also attack the classifier and this "
                   "detector together (PGD2 + [12] d_f 2 and GINA d_f 4; needs --srnet-epochs)")
    p.add_argument("--adaptive-weight", type=float, default=1.0, help="detector term's weight in the loss")
    p.add_argument("--adaptive-pairs", type=positive_int, default=None, help="at most this many test crops for "
                   "the adaptive attack (default: --test-pairs)")
    p.add_argument("--processes", type=positive_int, default=2, help="feature-extraction processes")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (recorded: the numbers "
                   "may depend on it; default: torch's choice)")
    p.add_argument("--stage", choices=["pairs", "all"], default="all", help="stop after making the pairs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same options): reuse "
                   "its files, features and SRNet epochs")
    p.set_defaults(experiment_main=main)
    _PARSER.clear()
    for a in p._actions:
        if a.dest != "help":
            _PARSER.append((a.dest, a.option_strings[0] if a.option_strings else "", a.nargs == 0))
    return p


def main(args: argparse.Namespace) -> int:
    from ..progress import stdout_console

    if not 0 < args.test_fraction < 1:
        fail("--test-fraction must be in (0, 1)")
    if any(d < 1 for d in args.dfs):
        fail("--dfs must be >= 1")
    if args.adaptive and args.srnet_epochs < 1:
        fail("--adaptive srnet needs an SRNet: --srnet-epochs N")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    summary = run(args, command_line(args, _PARSER), recorded(args, [d for d, _, _ in _PARSER]))
    console = stdout_console()
    if (out / "tables.md").exists() and args.stage == "all":
        console.print((out / "tables.md").read_text(), markup=False)
    else:
        for name, v in summary["variants"].items():
            console.print(f"{name}: {v['pairs']}/{v['attacked']} pairs, mean L2 {v['mean_l2']}")
    console.print(f"written to {out}")
    return 0
