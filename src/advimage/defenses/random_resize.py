"""Random-resize defense (thesis §9.5): at each inference, every image goes to the model's size
through a pipeline drawn at random, by default among the six downscalers of §9.3.

Attacks crafted through one downscaler rarely transfer to another (Table 9.2), so an attacker
facing this defense must fool the whole ensemble (§9.4.5), at a price in distortion. Optionally
the image is first resized to a random intermediate size (bilinear, in [ℓ, ℓ + intermediate]
pixels on the shorter side), which also makes the defense act on inputs already at the model's
size (e.g. in ``advimage bench`` at model size).

The pool is a list of deployed pipelines (:mod:`advimage.pipelines`: spec strings or a set name),
each applied through its differentiable front (:meth:`~advimage.pipelines.Pipeline.front`), the
same code the attacks use against those pipelines; the six downscalers' fronts give the values of
:class:`~advimage.resize.EvalTransform` exactly. Pipelines with ``+bf16`` or ``+jpeg:Q`` are
refused (see :func:`pool`).

Randomness comes from torch's global generator (``torch.manual_seed`` makes runs repeatable);
the output is differentiable through the pipeline drawn, so a gradient attack on it is EOT in
expectation.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch import Tensor, nn

from ..models.protocol import WrappedClassifier
from ..pipelines import PipelineError, parse, resolve
from ..resize import resize, shorter_side_size
from .registry import register

#: the default pool: the six downscalers of §9.3 (``resize.DOWNSCALERS``, same order)
DEFAULT_POOL = "downscalers"


def pool(pipelines: str | Sequence[str]) -> tuple[str, ...]:
    """The canonical specs a random resize draws among.

    pipelines: a set name or comma-separated specs (:func:`advimage.pipelines.resolve`), or a
    sequence of specs, taken in order as given (a repeated spec is drawn that much more often).
    Raises :class:`~advimage.pipelines.PipelineError` (a ``ValueError``) on an unknown name (its
    message lists the valid ones), an empty pool, or a pipeline with ``+bf16`` or ``+jpeg:Q``:
    bf16 is the network's precision, which a front does not set (the defense's classifier runs as
    built: the member would silently be fp32); a re-encode is of the uploaded file at its own size,
    while the fronts see the image after the random intermediate resize (refused for now; the JPEG
    defense is ``MODEL+jpeg:Q``). ``+round`` is a front's stage and is accepted.
    """
    if isinstance(pipelines, str):
        specs = resolve(pipelines) if pipelines.strip() else ()
    else:
        specs = tuple(parse(s).spec for s in pipelines)
    if not specs:
        raise PipelineError("random resize needs at least one downscaler (pipeline)")
    for s in specs:
        p = parse(s)
        if p.precision != "fp32":
            raise PipelineError(f"random resize refuses {s!r}: +bf16 is the network's precision, which the "
                                "defense does not switch (its classifier runs as built); give the resize alone")
        if p.jpeg is not None:
            raise PipelineError(f"random resize refuses {s!r} for now: +jpeg:Q re-encodes the uploaded file at its "
                                "own size, while the defense's fronts see the image after its random intermediate "
                                "resize; give the resize alone")
    return specs


class RandomDownscale(nn.Module):
    """(N, 3, H, W) float pixels -> (N, 3, ℓ, ℓ): per image, the front of a random pipeline of
    ``pipelines`` (shorter side to floor(ℓ / crop_pct) by the pipeline's resize, centre crop ℓ).

    pipelines: see :func:`pool` (default: the six §9.3 downscalers). methods: the former name of
    ``pipelines`` (a downscaler's name is its pipeline's spec); give one or the other.
    """

    def __init__(self, input_size: int, crop_pct: float, pipelines: str | Sequence[str] | None = None,
                 intermediate: int = 0, *, methods: Sequence[str] | None = None) -> None:
        super().__init__()
        if pipelines is not None and methods is not None:
            raise ValueError("give pipelines or methods (its former name), not both")
        specs = pool(DEFAULT_POOL if pipelines is None and methods is None else
                     (pipelines if pipelines is not None else tuple(methods or ())))
        if intermediate < 0:
            raise ValueError(f"intermediate must be >= 0 pixels, got {intermediate}")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        size = SimpleNamespace(input_size=int(input_size), crop_pct=float(crop_pct))
        self.fronts = nn.ModuleList([parse(s).front(size) for s in specs])
        self.pipelines = specs
        self.input_size = int(input_size)
        self.intermediate = int(intermediate)
        self.last_choice: Tensor | None = None  # (N,) indices into pipelines of the last call

    @property
    def methods(self) -> tuple[str, ...]:
        """The former name of :attr:`pipelines`."""
        return self.pipelines

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
        return f"pipelines={self.pipelines!r}, intermediate={self.intermediate}"


class RandomResizeDefense(WrappedClassifier):
    """A classifier behind :class:`RandomDownscale`; logits (N, C) for inputs of any size.

    intermediate: pixels of random extra size before the random pipeline (0: none).
    pipelines: the pool (:func:`pool`; default the six downscalers of §9.3); methods: its former
    name. crop_pct: override of the model's (1.0: the whole image, the thesis's Ch. 9 protocol on
    square images).
    """

    def __init__(self, model: nn.Module, intermediate: int = 0, pipelines: str | Sequence[str] | None = None,
                 crop_pct: float | None = None, *, methods: Sequence[str] | None = None) -> None:
        c = model.config
        super().__init__(model, RandomDownscale(c.input_size, crop_pct or c.crop_pct, pipelines, intermediate,
                                                methods=methods))


@register("random-resize", "a uniformly drawn §9.3 downscaler per image and inference (MODEL+random-resize[:PIXELS]: "
          "first a random intermediate size up to PIXELS more; thesis §9.5)")
def random_resize(model: nn.Module, intermediate: int = 0) -> RandomResizeDefense:
    """``MODEL+random-resize`` or ``MODEL+random-resize:32`` (a random intermediate size up to 32 px more)."""
    return RandomResizeDefense(model, intermediate=intermediate)
