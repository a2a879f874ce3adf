"""Argument types shared by the command-line parsers."""

from __future__ import annotations

import argparse


def df_value(value: str) -> float:
    """Degree of freedom of the quantizers: a non-negative integer or 'inf'."""
    if value.lower() in ("inf", "infinity"):
        return float("inf")
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"df must be a non-negative integer or 'inf', got {value!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("df must be >= 0")
    return float(v)


def positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_int_or_auto(value: str) -> int | str:
    """A positive integer, or ``automatic`` (a library's own search)."""
    if value == "automatic":
        return value
    return positive_int(value)


def quality_list(value: str) -> tuple[int, ...]:
    """Comma-separated JPEG quality factors, each in 1..100."""
    try:
        qs = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"qualities must be comma-separated integers, got {value!r}") from None
    if not qs or any(not 1 <= q <= 100 for q in qs):
        raise argparse.ArgumentTypeError(f"qualities must be in 1..100, got {value!r}")
    return qs


def add_pass_arguments(p: argparse.ArgumentParser) -> None:
    """``--precision``, ``--channels-last``, ``--compile``: faster attack passes
    (:mod:`advimage.models.fast`); files are verified in fp32 either way."""
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="the attack's passes under bf16 autocast (the quantizer and the verification stay fp32)")
    p.add_argument("--channels-last", action="store_true",
                   help="feed the network channels_last (NHWC) tensors (faster convolutions on GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network for the attack's passes (first batches pay the compilation)")


def pass_options(args: argparse.Namespace) -> dict:
    """The :class:`advimage.engine.Settings` fields of :func:`add_pass_arguments`'s options."""
    return dict(precision=args.precision, channels_last=args.channels_last, compile=args.compile)


def quantizer_name(value: str) -> str:
    """``auto``, a quantizer alias or a spec string of :mod:`advimage.quantize.grammar`."""
    from .quantize import AUTO, UnknownQuantizerError, spec

    if value == AUTO:
        return value
    try:
        spec(value)
    except UnknownQuantizerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value
