"""``advimage bench``: the RoBIC benchmark from the command line (see :mod:`.runner`).

Wiring in ``advimage/cli.py``: ``add_parser(sub)`` in ``build_parser`` and
``if args.command == "bench": return run(args)`` in ``main``.
"""

from __future__ import annotations

import argparse
import sys

from ..cli_support import HelpFormatter
from ..cli_types import add_pass_arguments, pass_options
from ..cli_types import df_value as _df
from ..cli_types import positive_int as _positive
from ..cli_types import quantizer_name as _quantizer

EXAMPLES = """examples:
  advimage bench val/ --models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --out runs/lite
  advimage bench val/ --models efficientnet_lite0 --limit 100 --out runs/lite --resume
  advimage bench val/ --models efficientnet_lite0 --thesis-protocol --out runs/thesis   # BP + SurFree at 5000
  advimage bench val/ --models efficientnet_lite0,efficientnet_lite0+jpeg:90 --attacks bp --quantize jpeg
  advimage bench val/ --models efficientnet_lite0,efficientnet_lite1 --ray --workers 2   # local Ray cluster
  advimage bench val/ --models efficientnet_lite0 --ray auto --gpus-per-worker 0.5      # cluster of `ray start`
  advimage bench val/ --compare-attacks fgsm:30,ifgsm,pgd,bp:50,cw:1000,ddn --models efficientnet_lite0 \\
      --out runs/fig6.1
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "bench", help="RoBIC benchmark: white-box + black-box half-distortions of models on an image set",
        description="Attack every image with every model (white box: attack + quantization, a lattice walk or "
                    "scaled by default; black box: CGBA at 2000 queries, or SurFree at 5000 with --thesis-protocol), "
                    "verify on PNG-decoded pixels, store each batch "
                    "(resumable), and write OUT/report/report.html with Table 6.2 (η(0), d½ white and black box).",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    from ..attacks import ATTACKS

    black_box = "/".join(n for n in ATTACKS.names() if ATTACKS.get(n).black_box)
    p.add_argument("images", nargs="+", help="image set: folder with labels.csv, ImageFolder tree, files")
    p.add_argument("--models", default="efficientnet_lite0", help="comma-separated model names (see `advimage models`)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--attacks", default=None,
                   help="comma-separated attacks, NAME or NAME:BUDGET (default: bp,cgba:2000); "
                        f"{black_box} are black box (budget = queries)")
    g.add_argument("--thesis-protocol", action="store_true",
                   help="the thesis's attacks: bp and SurFree at 5000 queries (bp,surfree:5000)")
    g.add_argument("--compare-attacks", default=None, metavar="ATTACKS",
                   help="compare several attacks on each model (Fig. 6.1 style overlay), e.g. fgsm,ifgsm,pgd,bp,cw,ddn")
    p.add_argument("--steps", type=_positive, default=100, help="gradient budget per image of white-box attacks")
    p.add_argument("--queries", type=_positive, default=5000,
                   help="query budget per image of black-box attacks given without one")
    p.add_argument("--df", type=_df, default=None,
                   help="degree of freedom of smart/jpeg/stego quantization (default 1; refused by other quantizers)")
    p.add_argument("--quantize", default="auto", type=_quantizer,
                   help="quantizer of white-box outputs (a name or spec string, see `advimage quantizers`); auto: "
                        "lattice-int when --steps >= 100, lattice from 62, else scaled. Black-box jobs use it where "
                        "it needs no gradient, else jpeg-pixels (for jpeg) or scaled")
    p.add_argument("--quality", type=int, default=None,
                   help="JPEG quality for --quantize jpeg/jpeg-pixels (default 90)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="κ (logits) the quantized images must reach (0: RoBIC's protocol, the boundary distance)")
    add_pass_arguments(p)
    p.add_argument("--size", default="model", choices=["model", "native"],
                   help="model: RoBIC's protocol, images resized to the model's input; native: files at their size")
    p.add_argument("--victim", default="pil+both", choices=["pil+both", "both", "pil", "float"],
                   help="native size: the resize paths attacked (see advimage attack --help)")
    p.add_argument("--limit", type=_positive, default=None, help="only the first N images")
    p.add_argument("--seed", type=int, default=0, help="random seed (torch and attacks)")
    p.add_argument("--batch-size", type=_positive, default=16, help="images per batch (and per commit)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads, locally and in every Ray worker (default: torch's choice here); "
                        "recorded in the run's settings")
    p.add_argument("--out", default="runs/bench", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (after a crash or Ctrl-C); finished configurations are reused")
    p.add_argument("--gallery", type=int, default=2, help="fooled examples per (model, attack) in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from ..distributed import add_arguments as add_ray_arguments
    add_ray_arguments(p)
    return p


def _refuse(msg: str) -> None:
    print(f"advimage bench: {msg}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace) -> int:
    """Run ``advimage bench``; prints the Markdown table and the report path. Returns the exit code."""
    from ..attacks import UnknownAttackError
    from ..data import DataError
    from ..distributed import RayUnavailableError, options_from_args
    from ..models import UnknownModelError, WeightsError
    from .runner import DEFAULT_ATTACKS, THESIS_ATTACKS, ConfigError, RunExistsError, run_benchmark

    attacks = args.compare_attacks or args.attacks or ",".join(THESIS_ATTACKS if args.thesis_protocol
                                                               else DEFAULT_ATTACKS)
    try:
        ray = options_from_args(args)
    except ValueError as exc:
        _refuse(str(exc))
    try:
        result = run_benchmark(
            args.images, args.models, attacks=attacks, steps=args.steps, queries=args.queries, df=args.df,
            limit=args.limit, seed=args.seed, batch_size=args.batch_size, device=args.device, out=args.out,
            resume=args.resume, compare=args.compare_attacks is not None, gallery=args.gallery,
            progress=not args.quiet, quantizer=args.quantize, quality=args.quality, size=args.size,
            victim=args.victim, margin=args.margin, ray=ray, **pass_options(args))
    except (UnknownModelError, UnknownAttackError, ConfigError, DataError, RunExistsError, WeightsError,
            RayUnavailableError) as exc:
        _refuse(str(exc))
    except KeyboardInterrupt:
        print(f"\nadvimage bench: interrupted; committed batches are kept, continue with --resume --out {args.out}",
              file=sys.stderr)
        return 130
    print(result.markdown, end="")
    reused = len(result.rows) - result.computed
    print(f"\n{len(result.rows)} rows ({result.computed} computed, {reused} reused, {result.n_errors} errors) "
          f"in {result.seconds:.1f} s")
    print(f"report: {result.report.html}\nrows: {result.results_csv}")
    return 0
