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
