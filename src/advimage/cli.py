"""Command line: ``advimage demo | attack | bench | detect | robustify | experiment | analyze | models | attacks |
quantizers | pipelines | defenses``.

The listing commands (:data:`LISTINGS`), the ``experiment`` sub-commands and the names the options
accept come from the registries (:mod:`advimage.registry`).

Exit status: 0 when every input was read (whether or not each attack succeeded), 1 when some
inputs could not be read (their rows say why; the others are done), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .cli_support import HelpFormatter, check_device, check_out_dir, fail
from .cli_types import add_pass_arguments, pass_options
from .cli_types import df_value as _df
from .cli_types import positive_int as _positive
from .cli_types import quantizer_name as _quantizer

if TYPE_CHECKING:
    from .engine import Settings

EXAMPLES = """examples:
  advimage attack photo.jpg                         # native size, label = the model's own prediction
  advimage attack imagenet-sample/ --limit 20 --out runs/a
  advimage attack photo.jpg --quantize jpeg --quality 90
  advimage attack photo.jpg --size model            # attack the 224x224 crop (thesis Scenario A)
  advimage attack photo.jpg --target 285 --json
  advimage attack photo.jpg --ensemble worst        # fools the model behind all six downscalers of §9.3
  advimage attack photo.png --regressor brisque --target-score 30   # quality (100 - BRISQUE) below 30 (App. A)
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="random seed (torch and seeded attacks)")
    p.add_argument("--offline", action="store_true", help="never try the network for timm:/torchvision: weights")


def _add_attack_options(p: argparse.ArgumentParser, steps: int = 100) -> None:
    from .models.regressors import regressor_names

    p.add_argument("--model", default="efficientnet_lite0",
                   help="registered model, or timm:<name> / torchvision:<name>")
    p.add_argument("--weights", default=None, help="weight file for the model (safetensors or torch state dict)")
    p.add_argument("--attack", default="bp", help="attack name (see `advimage attacks`)")
    p.add_argument("--steps", type=_positive, default=steps,
                   help="budget per image: gradients of attack + quantizer (white box), queries (black box)")
    p.add_argument("--quantize", default="auto", type=_quantizer,
                   help="auto (default): lattice-int for gradient attacks with --steps >= 100, lattice from 62, else "
                        "scaled; lattice-int: 49 more BP steps with integer iterates, then scaled (smallest files); "
                        "lattice: 30 more BP steps in the files' integer-cost metric, then scaled; scaled: the "
                        "perturbation amplified and rounded to PNG (no gradient); smart: §7.2 to PNG; jpeg: §7.3 "
                        "DCT-domain to .jpg; round: plain rounding; none: floats (.npy); or a spec string such as "
                        "smart+cost:hill+prune:1 or lattice-int+margin:0.2 (see `advimage quantizers`)")
    p.add_argument("--quality", type=int, default=None,
                   help="JPEG quality factor for --quantize jpeg/jpeg-pixels (1-100, default 90)")
    p.add_argument("--df", type=_df, default=None,
                   help="degree of freedom of smart/jpeg/stego quantization (0, 1, 2, ..., inf; default 1)")
    p.add_argument("--target", type=int, default=None, help="target class index (targeted attack)")
    p.add_argument("--regressor", default=None, choices=regressor_names(),
                   help="attack an image-quality regressor instead of --model (thesis App. A); brisque: quality = "
                        "100 - BRISQUE, higher is better")
    p.add_argument("--target-score", type=float, default=None,
                   help="with --regressor: the file's quality must fall below this score (s_a)")
    p.add_argument("--margin", type=float, default=None,
                   help="κ in logit units: the quantized file must reach L_adv <= -κ (default: the measured noise "
                        "margin advimage.criteria.NOISE_MARGIN for a classifier, 0 for a regressor; 0: the thesis's "
                        "exact protocol, files on the boundary)")
    p.add_argument("--size", default="native", choices=["native", "model"],
                   help="native: attack and write the file at its own size through the model's resize (Ch. 9, "
                        "Scenario B); model: attack the resized centre crop (Scenario A)")
    p.add_argument("--victim", default="pil+both", choices=["pil+both", "both", "pil", "float"],
                   help="native size: the resize paths the file must fool. pil+both: the attack goes through "
                        "Pillow's exact 8-bit resize (timm's and torchvision's eval transforms on PIL images), the "
                        "quantizer makes the file fool it and torchvision's float resize too; both: the attack goes "
                        "through both (slower); pil / float: one path only. Files are always verified through both")
    p.add_argument("--downscaler", default=None,
                   help="native size: another resize method (nearest, bilinear, bicubic, area, bilag, bilg, "
                        "torch-bicubic, pil-bicubic, ...)")
    p.add_argument("--ensemble", default=None, choices=["avg", "worst", "max"],
                   help="native size: attack through the six downscalers of thesis §9.3 at once (the file must "
                        "fool all six); gradients averaged (avg, EOT), of the member farthest from its boundary "
                        "(worst, L/||∇L||) or of the largest loss (max)")
    p.add_argument("--victims", default=None,
                   help="native size: the deployed pipelines the file must fool: a set (common: Pillow, "
                        "torchvision with and without antialias, OpenCV, clamp+round, bf16, JPEG q90 re-encode; "
                        "resizes; pair; downscalers) or specs, comma-separated (see `advimage pipelines`). The "
                        "attack goes through one pipeline per group of near-identical ones, the quantizer and the "
                        "verification through all")
    p.add_argument("--aggregation", default="max", choices=["avg", "worst", "max"],
                   help="with --victims: how the attack combines the pipelines' gradients (thesis §9.4.5)")
    p.add_argument("--jpeg-backward", default=None, choices=["identity", "cubic"],
                   help="with --victims holding a +jpeg:Q pipeline: the gradient of its re-encode (cubic, the "
                        "default there: JPEG's own DCT rounding, smoothed, 4:2:0; identity: BPDA's straight-through)")
    p.add_argument("--share", type=float, default=0.1,
                   help="with --victims: pipelines whose resizes differ by at most this relative amount on noise "
                        "share one attack member (0: the attack goes through every pipeline)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images attacked together")
    p.add_argument("--no-figures", action="store_true", help="skip the original|adversarial|perturbation pictures")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_pass_arguments(p)
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="advimage", description="Adversarial examples as real images.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"advimage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attack scikit-image's photos with EfficientNet-Lite0 and verify the files",
                          formatter_class=HelpFormatter)
    demo.add_argument("--out", default="advimage-demo", help="output folder")
    _add_attack_options(demo)
    att = sub.add_parser("attack", help="attack image files or image sets and write verified adversarial images",
                         formatter_class=HelpFormatter, epilog=EXAMPLES)
    att.add_argument("paths", nargs="+", help="image files, folders with labels.csv, ImageFolder trees")
    att.add_argument("--out", default="advimage-out", help="output folder")
    att.add_argument("--limit", type=_positive, default=None, help="attack only the first N images")
    _add_attack_options(att)
    from .distributed import add_arguments as add_ray_arguments
    add_ray_arguments(att)
    exp = sub.add_parser("experiment", help="reproduce a thesis table")
    exp_sub = exp.add_subparsers(dest="experiment", required=True)
    from .experiments import EXPERIMENTS
    for name in EXPERIMENTS.names():
        EXPERIMENTS.get(name).add_parser(exp_sub)
    from .bench import cli as bench_cli
    bench_cli.add_parser(sub)
    from .detect import cli as detect_cli
    detect_cli.add_parser(sub)
    from .analysis import cli as analysis_cli
    analysis_cli.add_parser(sub)
    from .robustify import cli as robustify_cli
    robustify_cli.add_parser(sub)
    for command, (text, _) in LISTINGS.items():
        sub.add_parser(command, help=text)
    return parser


# -- listings: each prints one registry (and what its resolver accepts beyond it) -----------------
def _list_models() -> None:
    from .models import MODELS

    for n in MODELS.names():
        print(f"{n:20s} {MODELS.description(n)}")
    print("(also timm:<name> and torchvision:<name> with local weights; MODEL+DEFENSE[:ARG], see `advimage "
          "defenses`; MODEL@weights.safetensors)")


def _list_attacks() -> None:
    from .attacks import ATTACKS

    for n in ATTACKS.names():
        s = ATTACKS.get(n)
        ref = s.reference if len(s.reference) <= 110 else s.reference[:109] + "…"
        print(f"{n:8s} {'black' if s.black_box else 'white'} box, --steps counts {s.budget:9s} {ref}")


def _list_quantizers() -> None:
    from .quantize import names as quantizer_names
    from .quantize import spec as quantizer_spec
    from .quantize.grammar import SYNTAX, rules

    for n in quantizer_names():
        qs = quantizer_spec(n)
        alias = f" = {qs.canonical}" if qs.canonical != n else ""
        print(f"{n:12s} {qs.suffix:5s} {qs.gradients:2d} grad  {qs.description}{alias}")
    print(f"\nor a spec string {SYNTAX} (RULE: {', '.join(rules())}; +cost on smart, +walk on scaled, "
          "+prune on both), e.g. smart+cost:hill+prune:1, lattice-int+margin:0.2")


def _list_pipelines() -> None:
    from .pipelines import SETS, SYNTAX, describe
    from .pipelines import names as pipeline_names

    for n in pipeline_names():
        print(f"{n:24s} {describe(n)}")
    print()
    for name, members in SETS.items():
        print(f"set {name:12s} {SETS.description(name)}: {', '.join(members)}")
    print(f"\nor specs {SYNTAX}, comma-separated, e.g. --victims pil-bicubic,cv2-area,torch-bicubic-noaa+jpeg:85")
    print("(--victim pil / float are pil-<f> / torch-<f> with the model's interpolation f; --downscaler NAME "
          "attacks through one of these resizes; --ensemble AGG through the set downscalers)")


def _list_defenses() -> None:
    from .defenses import DEFENSES

    for n in DEFENSES.names():
        print(f"{n:14s} {DEFENSES.description(n)}")
    print("(as MODEL+NAME or MODEL+NAME:ARG, ARG the defense's first option, e.g. efficientnet_lite0+jpeg:75)")


#: listing command -> (help, printer)
LISTINGS = {
    "models": ("list registered models", _list_models),
    "attacks": ("list attacks (white/black box, budget unit)", _list_attacks),
    "quantizers": ("list quantizers", _list_quantizers),
    "pipelines": ("list the deployed eval pipelines (--victims) and their sets", _list_pipelines),
    "defenses": ("list the defenses a model spec can put in front of a model (MODEL+NAME[:ARG])", _list_defenses),
}


def setup_torch(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "offline", False):
        os.environ["ADVIMAGE_OFFLINE"] = "1"


def _validate(args) -> "Settings":
    """The run's :class:`~advimage.engine.Settings`, or exit 2 naming what is wrong. The options'
    own checks live in the settings' resolution (:func:`advimage.plan.resolve`); only the pairings
    of command-line flags are checked here."""
    if args.target is not None and args.target < 0:  # the model's range is checked once it is loaded
        fail(f"--target {args.target}: a class index must be 0 or more")
    if (args.regressor is None) != (args.target_score is None):
        fail("--regressor and --target-score go together (e.g. --regressor brisque --target-score 30)")
    if args.regressor is not None and getattr(args, "ray", None):
        fail("--ray is not supported with --regressor")
    from .attacks import UnknownAttackError
    from .engine import Settings

    try:
        return Settings(attack=args.attack, steps=args.steps, quantizers=(args.quantize,), df=args.df,
                        quality=args.quality, target=args.target, size=args.size, victim=args.victim,
                        downscaler=args.downscaler, seed=args.seed, margin=args.margin,
                        ensemble=args.ensemble, target_score=args.target_score, victims=args.victims,
                        aggregation=args.aggregation, share=args.share, jpeg_backward=args.jpeg_backward,
                        **pass_options(args))
    except (ValueError, TypeError, UnknownAttackError) as exc:
        fail(str(exc))


def load_model_or_exit(name: str, weights: str | None, device: str | None):
    from .models import UnknownModelError, WeightsError, load_model

    kwargs = {"weights": weights} if weights else {}
    try:
        return load_model(name, device=device, **kwargs)
    except (UnknownModelError, WeightsError) as exc:
        fail(str(exc))


def load_regressor_or_exit(name: str, device: str | None):
    from .models.brisque import ModelFileError
    from .models.regressors import UnknownRegressorError, load_regressor

    try:
        return load_regressor(name, device=device)
    except (UnknownRegressorError, ModelFileError) as exc:
        fail(str(exc))


STATUS_TEXT = {"fooled": "[green]yes", "failed": "[red]no", "misclassified": "[yellow]already misclassified",
               "error": "[red]error"}


def print_table(rows, title: str, console=None) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("file", "size", "original → adversarial", "d", "d model", "PSNR", "grads/queries", "verified"):
        table.add_column(col, justify="right" if col in ("d", "d model", "PSNR", "grads/queries", "size") else "left")
    for r in rows:
        name = Path(r.output).name if r.output else Path(r.file).name
        if r.status == "error":
            table.add_row(name, "", f"[red]{r.error}", "", "", "", "", STATUS_TEXT["error"])
            continue
        goal = f" (target {r.target})" if r.target is not None else ""
        change = f"{r.label_name} ({r.label}) → {r.adversarial_name} ({r.adversarial_label}){goal}"
        if r.target_score is not None:
            after = f"{r.score:.2f}" if r.score is not None else "?"
            change = f"score {r.original_score:.2f} → {after} (target < {r.target_score:g})"
        paths = ", ".join(f"{p} {'✓' if v else '✗'}" for p, v in r.verified_paths.items() if v is not None)
        status_text = ("[yellow]already below target" if r.status == "misclassified" and r.target_score is not None
                       else STATUS_TEXT[r.status])
        verdict = status_text + (f" [dim]({paths})" if paths and r.status != "misclassified" else "")
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        d_text = fmt(r.distortion, ".3f")
        if r.compression_distortion is not None:  # JPEG: most of d is the compression itself
            d_text += f" (JPEG alone {r.compression_distortion:.3f})"
        table.add_row(name, f"{r.width}×{r.height}", change, d_text, fmt(r.distortion_model, ".3f"),
                      fmt(r.psnr, ".1f") if r.psnr is not None else ("∞" if r.distortion == 0 else ""),
                      f"{r.queries} q" if r.queries else str(r.gradients), verdict)
    from .progress import stdout_console

    (console or stdout_console()).print(table)


def summary_line(rows, elapsed: float, out: Path) -> str:
    ok = [r for r in rows if r.status != "error"]
    fooled = sum(r.status == "fooled" for r in ok)
    mis = sum(r.status == "misclassified" for r in ok)
    parts = [f"{fooled}/{len(ok)} files written and verified adversarial"]
    if mis:
        what = "below the target score" if any(r.target_score is not None for r in ok) else "misclassified"
        parts.append(f"{mis} already {what} (not attacked)")
    failed = sum(r.status == "failed" for r in ok)
    if failed:
        parts.append(f"{failed} failed (no file)")
    errors = len(rows) - len(ok)
    if errors:
        parts.append(f"{errors} unreadable")
    return "; ".join(parts) + f"; {elapsed:.1f} s; rows in {out}/results.json"


def _ray_options(args):
    """RayOptions from --ray and its options (None without --ray); bad values refused. The model
    name is checked here, before any cluster starts."""
    if not hasattr(args, "ray"):
        return None
    from .distributed import RayUnavailableError, import_plugins, options_from_args
    from .models import UnknownModelError
    from .specs import check as check_model

    try:
        options = options_from_args(args)
        if options is None:
            return None
        import_plugins(options.imports)
        check_model(args.model)
    except (ValueError, RayUnavailableError, UnknownModelError) as exc:
        fail(str(exc))
    return options


def _load_checked(args, settings: "Settings"):
    """The model (or regressor) the attack runs on, loaded here; a ``--target`` outside its
    classes is refused (exit 2) naming the model and its range, before any file is read or written."""
    from .data import LabelError
    from .engine import check_item_labels

    if args.regressor:
        return load_regressor_or_exit(args.regressor, args.device)
    model = load_model_or_exit(args.model, args.weights, args.device)
    try:
        check_item_labels([], model.config, settings)
    except LabelError as exc:
        fail(f"--{exc}")
    return model


def _run(args, items, out: Path, settings: "Settings", model=None) -> int:
    """model: the loaded model (:func:`_load_checked`); None with ``--ray`` (the workers load it)."""
    from .data import LabelError
    from .engine import attack_files
    from .progress import stderr_console

    ray = _ray_options(args)
    t0 = time.perf_counter()
    if ray is None:
        model = model if model is not None else _load_checked(args, settings)
        try:
            rows = attack_files(model, items, out, settings, batch_size=args.batch_size,
                                progress=not (args.quiet or args.json), figures=not args.no_figures,
                                console=stderr_console())
        except LabelError as exc:
            fail(str(exc))
        model_name = model.config.name
    else:  # the workers load the model; this process writes the files
        from .distributed import ModelRef, RayUnavailableError, worker_table
        stats: list = []
        try:
            rows = attack_files(ModelRef(args.model, args.weights, args.device), items, out, settings,
                                batch_size=args.batch_size, progress=not (args.quiet or args.json),
                                figures=not args.no_figures, console=stderr_console(), ray=ray, stats=stats)
        except RayUnavailableError as exc:
            fail(str(exc))
        except LabelError as exc:  # a target outside the model's classes is named as the option
            fail(f"--{exc}" if str(exc).startswith("target ") else str(exc))
        if stats and not (args.quiet or args.json):
            worker_table(stats[0])
        model_name = args.model
    elapsed = time.perf_counter() - t0
    data = [r.to_dict() for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        where = "native size" if args.size == "native" else "model size"
        print_table(rows, f"{args.attack} ({args.steps} steps) + {settings.quantizers[0]} on {model_name}, {where}")
        print(summary_line(rows, elapsed, out))
    return 1 if any(r.status == "error" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_torch(args)
    if args.command in LISTINGS:
        LISTINGS[args.command][1]()
        return 0
    if args.command == "experiment":
        from .data import DataError
        try:
            return args.experiment_main(args)
        except DataError as exc:
            fail(str(exc))
    if args.command == "bench":
        from .bench import cli as bench_cli
        return bench_cli.run(args)
    if args.command == "detect":
        from .detect import cli as detect_cli
        return detect_cli.run(args)
    if args.command == "analyze":
        return args.analyze_main(args)
    if args.command == "robustify":
        from .robustify import cli as robustify_cli
        return robustify_cli.run(args)
    settings = _validate(args)
    if getattr(args, "ray", None) is None:  # with --ray the workers pick their device
        args.device = check_device(args.device)
    out = check_out_dir(args.out)
    from .data import DataError, ImageItem, discover

    if args.command != "demo":
        try:
            items = discover(args.paths, missing_ok=True)
        except (DataError, OSError) as exc:
            fail(str(exc))
        if args.limit:
            items = items[: args.limit]
    # the model is loaded before any file is written: its classes bound --target
    model = None if getattr(args, "ray", None) else _load_checked(args, settings)
    if args.command == "demo":
        from .samples import write_samples
        items = [ImageItem(p) for p in write_samples(out / "originals")]
    return _run(args, items, out, settings, model)


if __name__ == "__main__":
    sys.exit(main())
