"""Rich-model feature extraction speed (thesis §8.4 detectors): images/s with 1 and more processes.

N images: 224×224 crops of scikit-image's bundled photos (cycling over photos and crop offsets),
or the PNG/JPEG files of a folder. Each (kind, processes) run starts from an empty cache, so every
image is computed; a last run per kind reads the cache back (cache hit speed).

Usage: python benchmarks/bench_features.py [FOLDER] [-n 8] [--processes 1,2] [--kinds srm,scrmq1]
       [--loops] [--out benchmarks/out/features.json]
``--loops`` adds a run with sealwatch's own co-occurrence loops (the features must be identical).
Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from advimage.detect.features import extract_files, sealwatch_version
from advimage.samples import SAMPLES, sample_array


def crops(folder: Path, n: int, size: int = 224) -> list[Path]:
    """n distinct size×size crops of the bundled photos, written as PNG into folder."""
    photos = [sample_array(name) for name in SAMPLES]
    paths = []
    for i in range(n):
        img = photos[i % len(photos)]
        k = i // len(photos)
        h, w = img.shape[:2]
        y, x = (k * 37) % (h - size), (k * 53) % (w - size)
        path = folder / f"crop{i:03d}.png"
        Image.fromarray(img[y:y + size, x:x + size]).save(path)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=None, help="folder of images (default: crops of bundled photos)")
    p.add_argument("-n", type=int, default=8, help="number of images")
    p.add_argument("--processes", default="1,2", help="comma-separated worker counts")
    p.add_argument("--kinds", default="srm,scrmq1", help="comma-separated feature kinds")
    p.add_argument("--loops", action="store_true", help="also time sealwatch's own co-occurrence loops "
                   "(1 process), against advimage's vectorized drop-in")
    p.add_argument("--out", default="benchmarks/out/features.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        if args.folder:
            exts = {".png", ".jpg", ".jpeg", ".bmp", ".ppm"}
            paths = sorted(q for q in Path(args.folder).iterdir() if q.suffix.lower() in exts)[:args.n]
        else:
            paths = crops(work, args.n)
        sizes = sorted({Image.open(q).size for q in paths})
        rows = []
        for kind in args.kinds.split(","):
            reference = None
            runs = [(int(v), False) for v in args.processes.split(",")] + ([(1, True)] if args.loops else [])
            for procs, loops in runs:
                cache = work / f"cache-{kind}-{procs}-{loops}"
                os.environ["ADVIMAGE_SEALWATCH_LOOPS"] = "1" if loops else "0"
                t0 = time.perf_counter()
                x = extract_files(paths, kind, processes=procs, cache_dir=cache, progress=False)
                seconds = time.perf_counter() - t0
                os.environ["ADVIMAGE_SEALWATCH_LOOPS"] = "0"
                if reference is None:
                    reference = x
                same = bool(np.array_equal(x, reference))
                rows.append({"kind": kind, "processes": procs, "images": len(paths), "seconds": round(seconds, 3),
                             "images_per_s": round(len(paths) / seconds, 4), "dim": int(x.shape[1]),
                             "same_as_first": same, "cached": False, "sealwatch_loops": loops})
                print(f"{kind:7s} {procs} proc{' sealwatch loops' if loops else ''}  "
                      f"{len(paths) / seconds:7.3f} img/s  ({seconds:.1f} s)"
                      f"{'' if same else '  DIFFERENT FEATURES'}", flush=True)
            t0 = time.perf_counter()
            x = extract_files(paths, kind, processes=1, cache_dir=cache, progress=False)
            seconds = time.perf_counter() - t0
            rows.append({"kind": kind, "processes": 1, "images": len(paths), "seconds": round(seconds, 4),
                         "images_per_s": round(len(paths) / seconds, 2), "dim": int(reference.shape[1]),
                         "same_as_first": bool(np.array_equal(x, reference)), "cached": True,
                         "sealwatch_loops": False})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "features", "sizes": [list(s) for s in sizes], "rows": rows,
              "sealwatch": sealwatch_version(), "cpus": os.cpu_count(), "machine": platform.processor() or
              platform.machine(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
              "source": args.folder or "scikit-image photos, 224x224 crops"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| kind | processes | images | s | images/s |\n|---|---|---|---|---|")
    for r in rows:
        procs = f"{r['processes']} (cache hit)" if r["cached"] else str(r["processes"])
        procs += " (sealwatch's loops)" if r["sealwatch_loops"] else ""
        print(f"| {r['kind']} | {procs} | {r['images']} | {r['seconds']} | {r['images_per_s']} |")
    print(f"\nimage sizes {sizes}; load average at the end {result['load_average']}; {out}")


if __name__ == "__main__":
    main()
