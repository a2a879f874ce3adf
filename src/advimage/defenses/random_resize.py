"""Random-resize defense (thesis §9.5): at each inference, every image goes to the model's size
through a downscaler drawn at random among the six of §9.3.

Attacks crafted through one downscaler rarely transfer to another (Table 9.2), so an attacker
facing this defense must fool the whole ensemble (§9.4.5), at a price in distortion. Optionally
the image is first resized to a random intermediate size (bilinear, in [ℓ, ℓ + intermediate]
pixels on the shorter side), which also makes the defense act on inputs already at the model's
size (e.g. in ``advimage bench`` at model size).

Randomness comes from torch's global generator (``torch.manual_seed`` makes runs repeatable);
the output is differentiable through the downscaler drawn, so a gradient attack on it is EOT in
expectation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.protocol import WrappedClassifier
from ..resize import DOWNSCALERS, EvalTransform, resize, shorter_side_size
from .registry import register


class RandomDownscale(nn.Module):
    """(N, 3, H, W) float pixels -> (N, 3, ℓ, ℓ): per image, a random method of ``methods``
    (the eval transform: shorter side to floor(ℓ / crop_pct), centre crop ℓ)."""

    def __init__(self, input_size: int, crop_pct: float, methods: tuple[str, ...] = DOWNSCALERS,
                 intermediate: int = 0) -> None:
        super().__init__()
        if not methods:
            raise ValueError("random resize needs at least one downscaler")
        if intermediate < 0:
            raise ValueError(f"intermediate must be >= 0 pixels, got {intermediate}")
        self.fronts = nn.ModuleList([EvalTransform(input_size, crop_pct, m) for m in methods])
        self.methods = tuple(methods)
        self.input_size = input_size
        self.intermediate = int(intermediate)
        self.last_choice: Tensor | None = None  # (N,) indices into methods of the last call

    def forward(self, x: Tensor) -> Tensor:
        if self.intermediate:
            lo = self.input_size
            short = int(torch.randint(lo, lo + self.intermediate + 1, ()).item())
            x = resize(x, shorter_side_size(x.shape[-2], x.shape[-1], short), "bilinear")
        choice = torch.randint(len(self.fronts), (x.shape[0],))
        self.last_choice = choice
        out = x.new_empty(x.shape[0], x.shape[1], self.input_size, self.input_size)
        for k in choice.unique().tolist():
            idx = (choice == k).nonzero().flatten().to(x.device)
            out = out.index_copy(0, idx, self.fronts[k](x.index_select(0, idx)))
        return out

    def extra_repr(self) -> str:
        return f"methods={self.methods!r}, intermediate={self.intermediate}"


class RandomResizeDefense(WrappedClassifier):
    """A classifier behind :class:`RandomDownscale`; logits (N, C) for inputs of any size.

    intermediate: pixels of random extra size before the random downscaler (0: none).
    methods: the downscaler pool (default the six of §9.3). crop_pct: override of the model's
    (1.0: the whole image, the thesis's Ch. 9 protocol on square images).
    """

    def __init__(self, model: nn.Module, intermediate: int = 0, methods: tuple[str, ...] = DOWNSCALERS,
                 crop_pct: float | None = None) -> None:
        c = model.config
        super().__init__(model, RandomDownscale(c.input_size, crop_pct or c.crop_pct, tuple(methods), intermediate))


@register("random-resize", "a uniformly drawn §9.3 downscaler per image and inference (MODEL+random-resize[:PIXELS]: "
          "first a random intermediate size up to PIXELS more; thesis §9.5)")
def random_resize(model: nn.Module, intermediate: int = 0) -> RandomResizeDefense:
    """``MODEL+random-resize`` or ``MODEL+random-resize:32`` (a random intermediate size up to 32 px more)."""
    return RandomResizeDefense(model, intermediate=intermediate)
