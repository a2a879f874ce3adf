"""Command-line options every ``advimage experiment`` shares."""

from __future__ import annotations

import argparse


def experiment_parser(subparsers, name: str, help: str, *, out: str, limit: int, batch_size: int = 8,
                      steps: int = 100) -> argparse.ArgumentParser:
    """A subparser with the common options: images, model, attack, steps, df, limit, batch size,
    seed, device, out, quiet (defaults shown in ``--help``)."""
    from ..cli_types import df_value, positive_int

    p = subparsers.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", nargs="+", help="image set (folder with labels.csv, ImageFolder, <wnid>_* files, "
                   "unlabelled files: labelled by the model)")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--attack", default="bp", help="attack name")
    p.add_argument("--steps", type=positive_int, default=steps, help="gradients per image, attack + quantizer")
    p.add_argument("--df", type=df_value, default=1.0, help="degree of freedom of the quantizers")
    p.add_argument("--limit", type=positive_int, default=limit, help="first N images")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per attack call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda if available)")
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p
