"""``advimage analyze``: analyses of models themselves (no images, no attack)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_support import HelpFormatter

DEFAULT_MODELS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"

EXAMPLES = """examples:
  advimage analyze class-vectors                                  # Lite0/1/2, terriers, Table 9.3 for the pairs
  advimage analyze class-vectors --models efficientnet_lite0 --classes 182-189 --against ""
  advimage analyze class-vectors --models timm:resnet18,timm:resnet50 --offline   # with local weights
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``analyze`` (and its subcommands) to the top-level subparsers."""
    from .class_vectors import TERRIERS, UNRELATED

    p = subparsers.add_parser("analyze", help="analyse models (class vectors of the last layer)")
    sub = p.add_subparsers(dest="analysis", required=True)
    cv = sub.add_parser("class-vectors", formatter_class=HelpFormatter, epilog=EXAMPLES,
                        help="thesis §5.2.3: norms of the class vectors (Table 5.2), their cosines Cω "
                             "(Tables 5.3-5.4) and the agreement of two models' Cω (Table 9.3)")
    cv.add_argument("--models", default=DEFAULT_MODELS,
                    help="comma-separated model names (registered, timm:<name>, torchvision:<name>)")
    cv.add_argument("--classes", default=",".join(map(str, TERRIERS)),
                    help="classes of the Cω block (indices and ranges, e.g. 182-189; Table 5.3's terriers)")
    cv.add_argument("--against", default=f"{UNRELATED[0]}-{UNRELATED[-1]}",
                    help="rows of a second block against --classes (Table 5.4); empty: none")
    cv.add_argument("--out", default="runs/class-vectors", help="output folder")
    cv.add_argument("--no-plots", action="store_true", help="no heat maps")
    cv.add_argument("--offline", action="store_true", help="never try the network for timm:/torchvision: weights")
    cv.set_defaults(analyze_main=class_vectors_main)
    return p


def class_vectors_main(args) -> int:
    from ..cli_support import check_out_dir, fail
    from ..models import UnknownModelError, WeightsError
    from ..specs import load_classifier
    from .report import analyze_class_vectors, markdown, parse_classes

    try:
        classes, against = parse_classes(args.classes), parse_classes(args.against)
    except ValueError as exc:
        fail(str(exc))
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        fail("--models: give at least one model")
    out = check_out_dir(args.out)
    models = {}
    for n in names:
        try:
            models[n] = load_classifier(n, device="cpu")
        except (UnknownModelError, WeightsError, ValueError) as exc:
            fail(str(exc))
    num = min(len(m.class_names) or 1000 for m in models.values())
    bad = [c for c in (*classes, *against) if not 0 <= c < num]
    if bad:
        fail(f"class indices out of range [0, {num}): {bad}")
    summary = analyze_class_vectors(models, Path(out), classes, against, plots=not args.no_plots)
    print(markdown(summary), end="")
    print(f"\nfiles in {out}/: norms.csv, correlation.csv, report.md, summary.json"
          + ("" if args.no_plots else ", heat maps (*.png)"))
    return 0
