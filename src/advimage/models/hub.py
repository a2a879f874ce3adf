"""Any timm or torchvision classifier by name, from locally available weights only.

No download is ever attempted: weights come from an explicit file, timm's Hugging Face
cache (read with ``HF_HUB_OFFLINE=1``) or torchvision's hub checkpoint folder.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .classifier import ModelConfig, PixelClassifier
from .imagenet import class_names
from .weights import WeightsError, load_state_dict


@contextmanager
def _offline():
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in old})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _names(n: int) -> list[str] | None:
    return list(class_names()) if n == 1000 else None


def load_timm(arch: str, weights: str | Path | None = None) -> PixelClassifier:
    import timm

    if arch not in timm.list_models(arch) and not timm.is_model(arch):
        raise WeightsError(f"timm has no model {arch!r}; see timm.list_models()")
    if weights is not None:
        net = timm.create_model(arch, pretrained=False)
        net.load_state_dict(load_state_dict(weights))
    else:
        try:
            with _offline():
                net = timm.create_model(arch, pretrained=True)
        except Exception as exc:
            raise WeightsError(
                f"no local weights for timm:{arch} (no download is attempted); "
                f"pass a weight file (--weights / weights=) or place them in the Hugging Face cache. Cause: {exc}"
            ) from exc
    cfg = net.pretrained_cfg
    config = ModelConfig(
        name=f"timm:{arch}", input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)), interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        num_classes=int(cfg.get("num_classes", 1000)), source=f"timm:{arch}",
    )
    return PixelClassifier(net, config, _names(config.num_classes))


def load_torchvision(arch: str, weights: str | Path | None = None) -> PixelClassifier:
    import torch
    import torchvision

    try:
        default = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception as exc:
        raise WeightsError(f"torchvision has no model {arch!r}; see torchvision.models.list_models()") from exc
    if weights is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
        if not cached.is_file():
            raise WeightsError(
                f"no local weights for torchvision:{arch}: expected {cached} (no download is attempted); "
                "pass a weight file (--weights / weights=)"
            )
        weights = cached
    net = torchvision.models.get_model(arch, weights=None)
    net.load_state_dict(load_state_dict(weights))
    tf = default.transforms()
    crop = int(tf.crop_size[0])
    interp = str(getattr(tf.interpolation, "value", tf.interpolation)).lower()
    config = ModelConfig(
        name=f"torchvision:{arch}", input_size=crop, crop_pct=crop / int(tf.resize_size[0]),
        interpolation=interp, mean=tuple(tf.mean), std=tuple(tf.std), num_classes=len(default.meta["categories"]),
        source=f"torchvision:{arch}",
    )
    return PixelClassifier(net, config, list(default.meta["categories"]))


def load_hub_model(source: str, arch: str, weights: str | Path | None = None) -> PixelClassifier:
    """Build ``source:arch`` where source is ``timm`` or ``torchvision``."""
    if source == "timm":
        return load_timm(arch, weights)
    if source == "torchvision":
        return load_torchvision(arch, weights)
    raise WeightsError(f"unknown model source {source!r}; use timm:<name> or torchvision:<name>")
