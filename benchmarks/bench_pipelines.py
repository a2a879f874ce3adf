"""Files that fool every deployed pipeline (issue 24): ``--victims common`` against the default pair.

For each configuration, the engine attacks the first ``--limit`` images at their own size (BP,
``--steps`` gradients, ``--quantizer``), writes nothing, and every fooled row's file is then
classified through each pipeline of ``pipelines.COMMON`` by its own libraries (Pillow,
torchvision, OpenCV, bf16 autocast, Pillow's JPEG re-encode). Configurations:

- ``default``: the engine's default (attack through Pillow's resize, quantizer through the pair);
- ``common``: ``victims="common"``, the 13 pipelines, the q90 re-encode's gradient BPDA's identity;
- ``resizes``: ``victims="resizes"`` (the 10 resizes: no rounding, bf16 or JPEG member), and
  ``common-m0``: ``common`` at margin 0; with ``default`` and ``common`` they split the price
  between the resizes, the other stages and the noise margin (on the first ``--split-limit`` images);
- ``common-avg``, ``common-worst``: ``common`` with the members' gradients averaged (EOT) or of the
  member farthest from its boundary (thesis §9.4.5), on the first ``--split-limit`` images;
- ``common-cubic``: ``common`` with the q90 re-encode's gradient through JPEG's smoothed DCT
  rounding (``jpeg_backward="cubic"``, the engine's default for ``victims="common"``) instead of
  the identity, on the first ``--split-limit`` images.

Rows go to a JSONL file as they come (``--out`` + ``.jsonl``; a rerun resumes), the summary to
``--out`` (JSON) and a table. Not a test; CPU times depend on the machine.

    python benchmarks/bench_pipelines.py --limit 50 --split-limit 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

#: The ``common`` configurations name their JPEG backward: they were measured with BPDA's identity,
#: the default before ``cubic`` (which ``victims="common"`` now resolves to), and keep that meaning.
CONFIGS = {
    "default": dict(),
    "common": dict(victims="common", jpeg_backward="identity"),
    "resizes": dict(victims="resizes"),
    "common-m0": dict(victims="common", margin=0.0, jpeg_backward="identity"),
    "common-avg": dict(victims="common", aggregation="avg", jpeg_backward="identity"),
    "common-worst": dict(victims="common", aggregation="worst", jpeg_backward="identity"),
    "common-cubic": dict(victims="common", jpeg_backward="cubic"),
}


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(args) -> list[dict]:
    from advimage.data import discover
    from advimage.engine import Settings, plan_batches, run_batch
    from advimage.models import load_model
    from advimage.pipelines import COMMON, fooled_through
    from advimage.progress import progress_bar

    model = load_model(args.model, device=args.device)
    items = discover([args.images])[: args.limit]
    log = Path(args.out).with_suffix(".jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["config"], r["key"]) for r in _rows(log)}
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; valid: {', '.join(CONFIGS)}")
    with log.open("a") as f, progress_bar(True) as bar:
        for c in configs:
            n = args.limit if c in ("default", "common") else min(args.limit, args.split_limit)
            todo = [it for it in items[:n] if (c, it.path.name) not in done]
            settings = Settings(attack=args.attack, steps=args.steps, quantizers=(args.quantizer,), **CONFIGS[c])
            task = bar.add_task(c, total=len(todo), status="")
            for idx in plan_batches(todo, args.batch_size, settings):
                batch = [todo[i] for i in idx]
                t0 = time.perf_counter()
                rows = run_batch(model, batch, settings)
                seconds = (time.perf_counter() - t0) / len(batch)
                for it, r in zip(batch, rows):
                    common = (fooled_through(model, r.data, r.label, COMMON)
                              if r.status == "fooled" and r.data is not None else {})
                    rec = dict(config=c, key=it.path.name, status=r.status, label=r.label,
                               distortion=r.distortion, file_margin=r.file_margin, gradients=r.gradients,
                               forwards=r.forwards, seconds=seconds, size=[r.height, r.width],
                               verified_paths=r.verified_paths, common=common)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                bar.update(task, advance=len(batch))
    return _rows(log)


def summarize(rows: list[dict]) -> dict:
    from advimage.pipelines import COMMON

    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["config"], {})[r["key"]] = r
    out: dict = {"configs": {}}
    for c, rs in by.items():
        attacked = [r for r in rs.values() if r["status"] in ("fooled", "failed")]
        fooled = [r for r in attacked if r["status"] == "fooled"]
        all13 = [r for r in fooled if r["common"] and all(r["common"].values())]
        per = {p: sum(bool(r["common"].get(p)) for r in fooled) / max(1, len(attacked)) for p in COMMON}
        out["configs"][c] = dict(
            images=len(rs), attacked=len(attacked), fooled=len(fooled),
            fool_all_common=len(all13) / max(1, len(attacked)),
            mean_distortion=statistics.fmean(r["distortion"] for r in fooled) if fooled else None,
            seconds_per_image=statistics.fmean(r["seconds"] for r in rs.values()),
            survival=per)
    if "default" in by:  # paired: the images that both configurations fooled
        base = by["default"]
        for c, rs in by.items():
            keys = [k for k in rs if k in base and rs[k]["status"] == "fooled" and base[k]["status"] == "fooled"]
            if keys:
                ratio = (statistics.fmean(rs[k]["distortion"] for k in keys)
                         / statistics.fmean(base[k]["distortion"] for k in keys))
                out["configs"][c].update(paired_images=len(keys), distortion_over_default=ratio)
    return out


def table(summary: dict) -> str:
    from advimage.pipelines import COMMON

    cs = summary["configs"]
    head = ["config", "attacked", "own verif.", "all 13", "mean d", "d / default", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, s in cs.items():
        ratio = s.get("distortion_over_default")
        paired = "" if ratio is None else f"{ratio:.3f} ({s['paired_images']} images)"
        lines.append(f"| {c} | {s['attacked']} | {s['fooled'] / max(1, s['attacked']):.1%} | "
                     f"{s['fool_all_common']:.1%} | {s['mean_distortion'] or float('nan'):.4f} | "
                     f"{paired} | "
                     f"{s['seconds_per_image']:.1f} |")
    lines += ["", "| pipeline | " + " | ".join(cs) + " |", "|---|" + "---|" * len(cs)]
    for p in COMMON:
        lines.append(f"| {p} | " + " | ".join(f"{cs[c]['survival'][p]:.1%}" for c in cs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="/work/shared/data/imagenet-sample", help="image set (labels.csv)")
    p.add_argument("--limit", type=int, default=50, help="images of default and common (default 50)")
    p.add_argument("--split-limit", type=int, default=16, help="images of resizes and common-m0 (default 16)")
    p.add_argument("--configs", default="default,common,resizes,common-m0")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attack", default="bp")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--quantizer", default="scaled", help="the same for every configuration (default scaled)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/out/pipelines.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = summarize(run(args))
    summary.update(command="python benchmarks/bench_pipelines.py " + " ".join(argv or []), model=args.model,
                   attack=args.attack, steps=args.steps, quantizer=args.quantizer, threads=args.threads,
                   machine=platform.platform(), torch=torch.__version__)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
