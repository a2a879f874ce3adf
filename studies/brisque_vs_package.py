"""advimage's torch BRISQUE against the ``brisque`` PyPI package, image by image.

    PYTHONPATH=src python studies/brisque_vs_package.py [IMAGE_DIR] [--limit N] [--out FILE.json]

Scores scikit-image's photos (astronaut, coffee, chelsea, rocket, immunohistochemistry) and the
first N ``*.JPEG`` / ``*.png`` files of IMAGE_DIR with both; prints the relative differences and
writes them as JSON. Needs the package and OpenCV (``pip install brisque opencv-python-headless``).
Under NumPy 2 the package's features are 1-element arrays that its scaling refuses to convert;
they are flattened first (the computation is unchanged).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image_dir", nargs="?", default=None)
    ap.add_argument("--limit", type=int, default=45)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import skimage.data
    from brisque import BRISQUE as Ref
    from PIL import Image

    from advimage.models.brisque import BRISQUE

    class Fixed(Ref):
        def scale_features(self, features):
            return super().scale_features([np.ravel(f)[0] for f in features])

    ref, ours = Fixed(url=False), BRISQUE()
    images = {n: getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket",
                                                       "immunohistochemistry")}
    if args.image_dir:
        files = sorted(p for p in Path(args.image_dir).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        for p in files[: args.limit]:
            images[p.name] = np.asarray(Image.open(p).convert("RGB"))
    rows = []
    for name, img in images.items():
        r = float(ref.score(img))
        t0 = time.perf_counter()
        s = float(ours(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float())[0])
        rows.append({"image": name, "size": list(img.shape[:2]), "package": r, "torch": s,
                     "relative_difference": abs(s - r) / abs(r), "seconds": time.perf_counter() - t0})
        print(f"{name:36s} {img.shape[1]}x{img.shape[0]}  package {r:9.4f}  torch {s:9.4f}  "
              f"rel {rows[-1]['relative_difference']:.2e}")
    rel = sorted(x["relative_difference"] for x in rows)
    print(f"{len(rows)} images: worst relative difference {rel[-1]:.2e}, median {rel[len(rel) // 2]:.2e}, "
          f"{sum(x <= 0.01 for x in rel)}/{len(rel)} within 1%")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
