"""Ensemble files of two quantizers on the same images: how many fool all six members, and at what
distortion (Table 9.1 setup, issue 9 bar "≥ 98% of PNG files fool all 6 members").

Reads the stored rows of a config (``load_rows``: the folder's ``results.sqlite``, or the
``attacks/<config>/rows.jsonl`` of an older folder) of two scaling-experiment folders and compares
the images present in both.

Usage: python studies/compare_ensemble_files.py RUN_A RUN_B [--config ens-worst]
       [--out studies/out/ensemble_files.json]
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from advimage.experiments.scaling import load_rows


def rows(run: Path, config: str) -> dict[str, dict]:
    out = {}
    for row in load_rows(run, config):
        r = asdict(row)
        if r["status"] not in ("misclassified", "error"):
            out[r["image"]] = r
    return out


def fools_all(r: dict, kind: str) -> bool:
    fooled = r[f"{kind}_fooled"]
    return bool(fooled) and all(fooled.values())


def summary(rs: list[dict]) -> dict:
    files = [r for r in rs if fools_all(r, "file")]
    return {"images": len(rs), "files_fool_all": len(files), "floats_fool_all": sum(fools_all(r, "float") for r in rs),
            "members_fooled_by_failed_files": sorted(sum(r["file_fooled"].values()) for r in rs
                                                     if not fools_all(r, "file")),
            "mean_float_d": statistics.fmean(r["float_distortion"] for r in rs) if rs else None,
            "mean_file_d_successes": statistics.fmean(r["file_distortion"] for r in files) if files else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--config", default="ens-worst")
    p.add_argument("--out", default="studies/out/ensemble_files.json")
    args = p.parse_args()
    a, b = rows(Path(args.run_a), args.config), rows(Path(args.run_b), args.config)
    common = [k for k in a if k in b]
    failed_a = [k for k in common if not fools_all(a[k], "file")]
    groups = {"all common images": common, f"images whose {args.run_a} file failed": failed_a}
    report = {"command": "python studies/compare_ensemble_files.py " + " ".join(
        [args.run_a, args.run_b, "--config", args.config]), "groups": {}}
    print(f"{args.config}: {len(common)} images in both runs")
    print("| images | run | files fooling all six | floats fooling all six | mean float d | mean file d (successes) |")
    print("|---|---|--:|--:|--:|--:|")
    for name, keys in groups.items():
        report["groups"][name] = {}
        for run, rs in ((args.run_a, a), (args.run_b, b)):
            s = summary([rs[k] for k in keys])
            report["groups"][name][run] = s
            fd = "-" if s["mean_file_d_successes"] is None else f"{s['mean_file_d_successes']:.3f}"
            md = "-" if s["mean_float_d"] is None else f"{s['mean_float_d']:.3f}"
            print(f"| {name} | {run} | {s['files_fool_all']}/{s['images']} | {s['floats_fool_all']}/{s['images']} | "
                  f"{md} | {fd} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
