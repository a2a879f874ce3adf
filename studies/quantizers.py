"""Quantizers compared on the same attack output (Table 7.1 setup): file distortion over the floats'.

One engine run at model size with several quantizers applied to the same BP output (the attack gets
``steps`` minus the largest quantizer gradient count, so every quantizer sees the same floats).
Reported per quantizer: success of the files over correctly classified images, mean file distortion,
the ratio of summed file distortion over summed float distortion on images where both succeed
(``d / floats``), the mean of the per-image ratios (``mean ratio``), and the gradients/forwards it
spent.

``--dfs`` and ``--quant-steps`` repeat the run for each quantizer degree of freedom (``df``, 1, 2,
..., ``inf``) and forward budget of the quantizer's λ search (``Settings.quantizer_steps``); the
attack is re-run each time with the same seed and budget, and the script checks that its floats
are identical across settings (``floats_identical`` in the JSON). ``--skip N`` starts at the
(N+1)-th image of the set (``--skip 100 --limit 8``: rows 100-107).

Usage: python studies/quantizers.py IMAGES [--skip 0] [--limit 100] [--steps 100]
       [--quantizers none,smart,smart-prune] [--dfs 1] [--quant-steps 10]
       [--out studies/out/quantizers.json]
Writes JSON and prints a table (and, with several df or forward budgets, the ratio per df x budget).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import advimage
from advimage.data import discover
from advimage.engine import Settings, run_batch
from advimage.quantize import spec as quantizer_spec


def _dfs(text: str) -> list[float]:
    return [float("inf") if t.strip().lower() in ("inf", "infinity") else float(int(t)) for t in text.split(",")]


def _df_name(df: float) -> str:
    return "inf" if df == float("inf") else str(int(df))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--skip", type=int, default=0, help="images of the set to skip first")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--attack", default="bp")
    p.add_argument("--quantizers", default="none,smart,smart-prune")
    p.add_argument("--dfs", type=_dfs, default=[1.0], help="comma-separated df values (integers or inf)")
    p.add_argument("--quant-steps", default="10", help="comma-separated forward budgets of the λ search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="studies/out/quantizers.json")
    args = p.parse_args()
    qsteps = [int(t) for t in args.quant_steps.split(",")]
    model = advimage.load_model("efficientnet_lite0", device=args.device)
    items = discover(args.images)[args.skip:args.skip + args.limit]
    qs = tuple(args.quantizers.split(","))
    results, floats, seconds, attack_steps = [], {}, {}, None
    for fw in qsteps:
        for df in args.dfs:
            takes_df = any(q != "auto" and quantizer_spec(q).uses_df for q in qs)
            settings = Settings(attack=args.attack, steps=args.steps, quantizers=qs, size="model", margin=0.0,
                                df=df if takes_df else None,
                                quantizer_steps=fw, seed=args.seed)
            attack_steps = settings.attack_steps
            qs = settings.quantizers  # "auto" resolved
            t0 = time.perf_counter()
            rows = []
            for s in range(0, len(items), args.batch_size):
                rows.extend(run_batch(model, items[s:s + args.batch_size], settings))
            seconds[f"df={_df_name(df)},forwards={fw}"] = time.perf_counter() - t0
            by = {q: {r.key: r for r in rows if r.quantizer == q} for q in qs}
            first = by[qs[0]]
            attacked = [k for k, r in first.items() if r.status not in ("misclassified", "error")]
            floats[(df, fw)] = {k: first[k].attack_distortion for k in attacked}
            ref = by.get("none")
            for q in qs:
                ok = [k for k in attacked if by[q][k].status == "fooled"]
                res = {"quantizer": q, "df": _df_name(df), "quant_steps": fw, "attacked": len(attacked),
                       "success": len(ok) / max(1, len(attacked)),
                       "mean_distortion": statistics.fmean(by[q][k].distortion for k in ok) if ok else None,
                       "max_gradients": max((by[q][k].gradients for k in attacked), default=0),
                       "mean_forwards": statistics.fmean(by[q][k].forwards for k in attacked) if attacked else None}
                if ref is not None:
                    both = [k for k in ok if ref[k].status == "fooled" and ref[k].distortion > 0]
                    res["both_fooled"] = len(both)
                    res["mean_float_distortion"] = statistics.fmean(ref[k].distortion for k in both) if both else None
                    res["over_floats"] = (sum(by[q][k].distortion for k in both) / sum(ref[k].distortion for k in both)
                                          if both else None)
                    res["mean_ratio"] = (statistics.fmean(by[q][k].distortion / ref[k].distortion for k in both)
                                         if both else None)
                # per image (JSON only): file distortion or None where the file is not adversarial
                res["per_image"] = {str(k): (by[q][k].distortion if by[q][k].status == "fooled" else None)
                                    for k in attacked}
                results.append(res)
    ref_floats = next(iter(floats.values()))
    identical = all(f == ref_floats for f in floats.values())
    report = {"command": "python studies/quantizers.py " + " ".join(sys.argv[1:]), "steps": args.steps,
              "attack_steps": attack_steps, "images": [str(it.path) for it in items], "seconds": seconds,
              "floats_identical": identical, "torch_threads": torch.get_num_threads(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    n_att = len(ref_floats)
    mean_float = statistics.fmean(ref_floats.values()) if ref_floats else float("nan")
    print(f"{args.attack} {attack_steps} gradients, then each quantizer; images {args.skip}-"
          f"{args.skip + len(items) - 1} ({len(items)}), {n_att} attacked, mean float distortion {mean_float:.3f}; "
          f"floats identical across settings: {identical}; {sum(seconds.values()):.0f} s")
    print("| quantizer | df | forwards | success | mean d (files) | d / floats | mean ratio | max gradients "
          "| mean forwards |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
    for r in results:
        print(f"| {r['quantizer']} | {r['df']} | {r['quant_steps']} | {100 * r['success']:.1f}% | "
              f"{f(r['mean_distortion'], '.3f')} | {f(r.get('over_floats'), '.3f')} | "
              f"{f(r.get('mean_ratio'), '.3f')} | "
              f"{r['max_gradients']} | {f(r['mean_forwards'], '.1f')} |")
    if len(args.dfs) * len(qsteps) > 1 and "none" in qs:
        for q in (q for q in qs if q != "none"):
            for key, name in (("mean_ratio", "mean of per-image file/float ratios"),
                              ("over_floats", "summed file / summed float distortion")):
                print(f"\n{q}: {name}")
                print("| df | " + " | ".join(f"{fw} forwards" for fw in qsteps) + " |")
                print("|---|" + "--:|" * len(qsteps))
                for df in args.dfs:
                    cells = [next(r for r in results if r["quantizer"] == q and r["df"] == _df_name(df)
                                  and r["quant_steps"] == fw).get(key) for fw in qsteps]
                    print(f"| {_df_name(df)} | " + " | ".join(f(c, ".2f") for c in cells) + " |")


if __name__ == "__main__":
    main()
