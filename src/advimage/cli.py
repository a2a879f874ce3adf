"""Command line: ``advimage demo | attack | models | attacks``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli_types import df_value as _df


def _add_attack_options(p: argparse.ArgumentParser, steps: int = 100) -> None:
    p.add_argument("--model", default="efficientnet_lite0", help="registered model, or timm:<name> / torchvision:<name>")
    p.add_argument("--weights", default=None, help="weight file for the model (safetensors or torch state dict)")
    p.add_argument("--attack", default="bp", help="attack name (see `advimage attacks`)")
    p.add_argument("--steps", type=int, default=steps, help="gradient budget per image (queries for black-box attacks)")
    p.add_argument("--quantize", default="smart", choices=["smart", "round", "none", "jpeg"],
                   help="smart: §7.2 quantization to PNG; jpeg: §7.3 DCT-domain quantization to .jpg; "
                        "round: plain rounding to PNG; none: keep floats (.npy)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality factor for --quantize jpeg (1-100)")
    p.add_argument("--df", type=_df, default=1.0, help="degree of freedom of smart quantization (0, 1, 2, ..., inf)")
    p.add_argument("--target", type=int, default=None, help="target class index (targeted attack)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-figures", action="store_true", help="skip the original|adversarial|perturbation pictures")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advimage", description="Adversarial examples as real images.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attack scikit-image's photos with EfficientNet-Lite0 and verify the PNGs")
    demo.add_argument("--out", default="advimage-demo", help="output folder")
    _add_attack_options(demo)
    att = sub.add_parser("attack", help="attack image files or image sets and write verified adversarial images")
    att.add_argument("paths", nargs="+", help="image files, folders with labels.csv, ImageFolder trees")
    att.add_argument("--out", default="advimage-out", help="output folder")
    att.add_argument("--limit", type=int, default=None, help="attack only the first N images")
    _add_attack_options(att)
    exp = sub.add_parser("experiment", help="reproduce a thesis table")
    exp_sub = exp.add_subparsers(dest="experiment", required=True)
    qt = exp_sub.add_parser("quant-table", help="Table 7.1 first columns: floats vs PNG rounding vs PNG smart")
    qt.add_argument("images", nargs="+", help="image set (folder with labels.csv, ImageFolder, <wnid>_* files)")
    qt.add_argument("--model", default="efficientnet_lite0")
    qt.add_argument("--attack", default="bp")
    qt.add_argument("--steps", type=int, default=100)
    qt.add_argument("--df", type=_df, default=1.0)
    qt.add_argument("--limit", type=int, default=100)
    qt.add_argument("--batch-size", type=int, default=16)
    qt.add_argument("--device", default=None)
    qt.add_argument("--out", default="runs/quant-table")
    from .experiments import jpeg_defense, jpeg_table
    jpeg_table.add_parser(exp_sub)
    jpeg_defense.add_parser(exp_sub)
    from .bench import cli as bench_cli
    bench_cli.add_parser(sub)
    sub.add_parser("models", help="list registered models")
    sub.add_parser("attacks", help="list attacks")
    return parser


def _validate(args) -> None:
    from .attacks import names as attack_names

    if args.attack not in attack_names():
        raise SystemExit(f"advimage: unknown attack {args.attack!r}; valid attacks: {', '.join(attack_names())}")
    if args.steps < 1:
        raise SystemExit("advimage: --steps must be >= 1")
    if not 1 <= args.quality <= 100:
        raise SystemExit("advimage: --quality must be in [1, 100]")
    if args.target is not None and not 0 <= args.target < 1000:
        raise SystemExit("advimage: --target must be a class index in [0, 1000)")


def _load_model(args):
    from .models import UnknownModelError, WeightsError, load_model

    kwargs = {"weights": args.weights} if args.weights else {}
    try:
        return load_model(args.model, device=args.device, **kwargs)
    except (UnknownModelError, WeightsError) as exc:
        raise SystemExit(f"advimage: {exc}") from None


def print_table(outcomes, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("file", "original → adversarial", "d", "PSNR", "grads", "verified"):
        table.add_column(col, justify="right" if col in ("d", "PSNR", "grads") else "left")
    for o in outcomes:
        if o.error:
            table.add_row(Path(o.file).name, f"[red]error: {o.error}", "", "", "", "[red]no")
            continue
        table.add_row(
            Path(o.output).name, f"{o.label_name} ({o.label}) → {o.adversarial_name} ({o.adversarial_label})",
            f"{o.distortion:.3f}", f"{o.psnr:.1f}", str(o.gradients), "[green]yes" if o.verified else "[red]no",
        )
    Console().print(table)


def _run(args, items, out: Path) -> int:
    from .pipeline import attack_files

    model = _load_model(args)
    t0 = time.perf_counter()
    outcomes = attack_files(
        model, items, out, batch_size=args.batch_size, progress=not (args.quiet or args.json), attack=args.attack,
        steps=args.steps, quantizer=args.quantize, df=args.df, quality=args.quality, target=args.target,
        figures=not args.no_figures,
    )
    elapsed = time.perf_counter() - t0
    rows = [o.to_dict() for o in outcomes]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        ok = [o for o in outcomes if o.error is None]
        print_table(outcomes, f"{args.attack} ({args.steps} steps) + {args.quantize} quantization on {model.config.name}")
        n_ver = sum(o.verified for o in ok)
        print(f"{n_ver}/{len(ok)} written files verified adversarial; {len(outcomes) - len(ok)} unreadable; "
              f"{elapsed:.1f} s; results in {out}/results.json")
    return 0


def _experiment(args) -> int:
    if getattr(args, "experiment_main", None) is not None:
        return args.experiment_main(args)
    if args.experiment == "quant-table":
        from .experiments import quantization_table
        summary = quantization_table.run(args.images, Path(args.out), args.model, args.attack, args.steps, args.df,
                                         args.limit, args.batch_size, args.device)
        print(quantization_table.markdown(summary))
        return 0
    raise SystemExit(f"advimage: unknown experiment {args.experiment!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        from .models import names
        print("\n".join(names()) + "\n(also timm:<name> and torchvision:<name> with local weights)")
        return 0
    if args.command == "attacks":
        from .attacks import names
        print("\n".join(names()))
        return 0
    if args.command == "experiment":
        return _experiment(args)
    if args.command == "bench":
        from .bench import cli as bench_cli
        return bench_cli.run(args)
    _validate(args)
    from .data import DataError, ImageItem, discover

    out = Path(args.out)
    if args.command == "demo":
        from .samples import write_samples
        items = [ImageItem(p) for p in write_samples(out / "originals")]
    else:
        try:
            items = discover(args.paths)
        except (DataError, OSError) as exc:
            raise SystemExit(f"advimage: {exc}") from None
        if args.limit:
            items = items[: args.limit]
    return _run(args, items, out)


if __name__ == "__main__":
    sys.exit(main())
