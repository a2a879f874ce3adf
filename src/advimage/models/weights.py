"""Loading weight files without running pickled code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not fit the architecture."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file with ``weights_only=True``.

    A checkpoint wrapping the state dict under ``state_dict`` / ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    sd: Any  # a state dict, or a checkpoint holding one (checked below)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusing code, truncated file, ...
        raise WeightsError(f"cannot load weights from {path} safely: {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return sd
