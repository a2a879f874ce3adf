"""What every command-line parser shares: the help formatter, one-line refusals, device and output checks.

``advimage.cli`` and the sub-CLIs (``bench``, ``detect``, ``analyze``, ``robustify``, the experiments)
import these from here; nothing here imports a CLI, so the CLIs never import each other back.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples' line breaks."""


def fail(msg: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, then exit."""
    print(f"advimage: {msg}", file=sys.stderr)
    raise SystemExit(code)


def check_device(device: str | None) -> str:
    """The device to use, refused in one line if torch cannot use it."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        fail(f"bad --device {device!r}: use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            fail(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        fail(f"--device {device}: only cpu and cuda are supported")
    return device


def check_out_dir(out: str | os.PathLike) -> Path:
    """An output folder that exists or can be made, and is writable; refused before any work."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        fail(f"--out {path}: exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        fail(f"--out {path}: {probe} is not writable")
    return path
