"""``advimage robustify MODEL IMAGES --out DIR``: thesis Appendix B training (see :mod:`.train`).

Wiring in ``advimage/cli.py``: ``add_parser(sub)`` in ``build_parser`` and
``if args.command == "robustify": return run(args)`` in ``main``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..cli_support import HelpFormatter

EXAMPLES = """examples:
  advimage robustify efficientnet_lite0 imagenet-sample/ --limit 300 --out runs/rob-eps1
  advimage robustify efficientnet_lite0 photos/ --distance cc --eps 0.5 --epochs 5 --out runs/rob-cc
  advimage robustify efficientnet_lite0 imagenet-sample/ --limit 300 --epochs 6 --out runs/rob-eps1 --resume
  advimage bench held-out/ --models efficientnet_lite0,efficientnet_lite0@runs/rob-eps1/student.safetensors
  advimage attack photo.jpg --model efficientnet_lite0 --weights runs/rob-eps1/student.safetensors
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..cli_types import positive_int
    from .distances import names as distance_names
    from .train import BN_STATS

    p = subparsers.add_parser(
        "robustify", help="App. B: unsupervised feature-pairing retraining of a model's feature extractor",
        description="Clone MODEL into a frozen teacher and a student; train the student's feature extractor "
                    "(every conv and BatchNorm, the last FC layer frozen) with dist(g_s(x0), g_t(x0)) + "
                    "dist(g_s(x_a), g_s(x0)), x_a from the online attack of eqs. 9.6-9.7 on the student "
                    "(pseudo-labels: its own predictions; labels are never read). Writes OUT/student.safetensors "
                    "(+ .json) and a resumable checkpoint after every epoch.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("model", help="registered model (see `advimage models`), e.g. efficientnet_lite0")
    p.add_argument("images", nargs="+", help="training images: files or folders (labels, if any, are ignored)")
    p.add_argument("--out", required=True, help="run folder (student.safetensors, checkpoint)")
    p.add_argument("--weights", default=None, help="start from this weight file instead of the model's own")
    p.add_argument("--distance", default="mse", choices=distance_names(), help="feature distance (eqs. 9.8-9.11)")
    p.add_argument("--eps", type=float, default=1.0, help="distortion bound ε of the online attack (eq. 6.2, pixels)")
    p.add_argument("--iters", type=positive_int, default=1, help="N_iter of the online attack (eq. 9.6)")
    p.add_argument("--epochs", type=positive_int, default=3, help="passes over the images (in total, with --resume)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per Adam step")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--size", type=positive_int, default=None,
                   help="training resolution of the model's crop (default: the model's input size)")
    p.add_argument("--bn-stats", default="update", choices=BN_STATS,
                   help="update: BatchNorm in training mode (batch statistics); frozen: running statistics")
    p.add_argument("--skip", type=int, default=0, help="skip the first N images (e.g. a held-out split)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most N images (after --skip)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _refuse(msg: str) -> NoReturn:
    print(f"advimage robustify: {msg}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace) -> int:
    """Run ``advimage robustify``; prints one line per epoch and where the student is."""
    import torch

    from ..cli_support import check_device, check_out_dir
    from ..data import DataError, discover
    from ..models import UnknownModelError, WeightsError, load_model
    from ..models.registry import MODELS
    from .train import RobustifyError, Settings, data_fingerprint, load_images, read_run_info, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.skip < 0:
        _refuse("--skip must be >= 0")
    if "+" in args.model or "@" in args.model:
        _refuse(f"{args.model!r}: give a plain model name (defenses cannot be trained; weights go in --weights)")
    if args.model not in MODELS and ":" not in args.model:
        _refuse(str(MODELS.unknown(args.model)))
    device = check_device(args.device)
    out = check_out_dir(args.out)
    if args.resume:
        try:
            read_run_info(out)
        except RobustifyError as exc:
            _refuse(str(exc))
    elif (out / "checkpoint.safetensors").exists():
        _refuse(f"{out} already holds a run; continue it with --resume or choose another --out")
    try:
        items = discover(args.images)
    except (DataError, OSError) as exc:
        _refuse(str(exc))
    items = items[args.skip:]
    if args.limit:
        items = items[: args.limit]
    if not items:
        _refuse(f"no training images left after --skip {args.skip}")
    try:
        model = load_model(args.model, device=device, **({"weights": args.weights} if args.weights else {}))
        x, names = load_images(items, model.config, args.size)
        settings = Settings(model=args.model, weights=args.weights, distance=args.distance, eps=args.eps,
                            iters=args.iters, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                            seed=args.seed, size=args.size, bn_stats=args.bn_stats, data=data_fingerprint(names))
        result = train(model, x, out, settings, resume=args.resume, progress=not args.quiet)
    except (UnknownModelError, WeightsError, RobustifyError) as exc:
        _refuse(str(exc))
    except KeyboardInterrupt:
        print(f"\nadvimage robustify: interrupted; the last finished epoch is kept, continue with --resume "
              f"--out {out}", file=sys.stderr)
        return 130
    if len(names) < len(items):
        print(f"advimage robustify: {len(items) - len(names)} unreadable images skipped", file=sys.stderr)
    for h in result.history:
        print(f"epoch {h['epoch']}: L_nat {h['l_nat']:.5g}  L_rob {h['l_rob']:.5g}  L_tot {h['l_tot']:.5g}  "
              f"({h['seconds']:.0f} s)")
    print(f"{len(names)} images, {result.epochs} epochs, {result.steps} steps ({result.seconds:.0f} s this call); "
          f"student: {result.student_path}\nuse it as --model {args.model}@{result.student_path} (bench) or "
          f"--model {args.model} --weights {result.student_path}")
    return 0
