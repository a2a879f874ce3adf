"""PixelClassifier: a network that takes float pixels in [0, 255] and owns its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    """What a model expects of its input (timm's pretrained config, in pixel terms).

    input_size: side of the square crop fed to the network, pixels.
    crop_pct: fraction of the resized image kept by the center crop (resize side = input_size / crop_pct).
    interpolation: resampling filter name for the resize ("bicubic", "bilinear", "nearest").
    mean, std: normalization in [0, 1] units, per channel, applied inside the model.
    """

    name: str
    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    num_classes: int = 1000
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False)


class PixelClassifier(nn.Module):
    """Wraps a network: (N, 3, H, W) float pixels in [0, 255] -> (N, C) logits.

    Normalization ``(x / 255 - mean) / std`` (thesis eq. 4.3) is the first layer, with
    mean and std as buffers so that ``.to(device)`` moves them.
    """

    mean: Tensor  # buffers (register_buffer), declared for type checkers
    std: Tensor

    def __init__(self, net: nn.Module, config: ModelConfig, class_names: list[str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(config.num_classes)]
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) pixels, got {tuple(x.shape)}")
        return self.net((x.to(self.mean.dtype) - self.mean) / self.std)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def predict(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """Predicted classes (N,) for pixels x, evaluated in batches without gradient."""
        return predict_classes(self, x, batch_size)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, input_size={c.input_size}, crop_pct={c.crop_pct}, interpolation={c.interpolation!r}"


@torch.no_grad()
def predict_classes(model: Any, x: Tensor, batch_size: int = 64) -> Tensor:
    """Classes (N,) of a classifier on pixels x (N, 3, H, W), in batches, without gradient. For
    models with several outputs per image (logits (N, P, C)), the first output's class.
    model: a classifier (:class:`advimage.models.protocol.Classifier`: an ``nn.Module`` with a ``device``)."""
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(model.device).float())
        out.append((logits[:, 0] if logits.ndim == 3 else logits).argmax(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
