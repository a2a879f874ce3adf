"""The victims' eval pipelines: how a deployed classifier meets an image file.

A pipeline is ``[JPEG re-encode] → resize (library, filter, antialias) → centre crop →
[clamp + round] → model (fp32 | bf16)``, named by a spec string::

    RESIZE[+round][+bf16][+jpeg:Q]

- RESIZE: ``pil-<f>`` (Pillow's 8-bit resize on a PIL image, as torchvision's ``Resize`` does on
  PIL images: f = bilinear, bicubic, lanczos, box, hamming), ``torch-<f>`` / ``torch-<f>-noaa``
  (torchvision's ``resize`` on the float tensor, antialias on / off: f = bilinear, bicubic),
  ``cv2-<f>`` (``cv2.resize`` on the uint8 array: f = area, linear, cubic, lanczos; needs the
  ``opencv`` extra) or one of the six downscalers of thesis §9.3 (float);
- ``+round``: the resized float crop is clamped to [0, 255] and rounded (a uint8 tensor);
- ``+bf16``: the network runs under bf16 autocast (GPU inference);
- ``+jpeg:Q``: whoever uploads the file re-encodes it first, with Pillow's defaults (4:2:0) at
  quality Q, at the file's own size.

The shorter side goes to ``floor(input_size / crop_pct)`` and the centre ``input_size`` square
is kept, as timm's eval transforms do, whatever the library.

Each pipeline has two implementations that are tested equal:

* :meth:`Pipeline.model_input`: the real thing on a file's bytes (Pillow, torchvision, OpenCV),
  used to verify files;
* :meth:`Pipeline.front`: a differentiable layer on float pixels (N, 3, H, W) → (N, 3, S, S),
  used by attacks and quantizers. Pillow: the fixed-point linear layer of :mod:`.resize`
  (exact, straight-through rounding); torchvision: its own float resize; OpenCV: the values of
  ``cv2.resize`` itself on the rounded pixels (exact on integral inputs, as the quantizer's
  candidates are), gradient through the transpose of the float weights read off OpenCV;
  ``+round``: straight-through; ``+jpeg``: Pillow's real re-encode, with BPDA's backward (Athalye,
  Carlini & Wagner, ICML 2018, §4.1): the identity, or (``jpeg_backward="cubic"``) the gradient of
  :func:`~advimage.jpeg.transform.soft_roundtrip` at 4:2:0, which damps what the re-encode erases.

:class:`PipelineClassifier` runs one model behind several pipelines: logits (N, P, C), the
multi-path form the criteria (:class:`~advimage.criteria.AllPaths`) and the loss oracle's
ensemble aggregation (``max``, ``avg``, ``worst``) already take. :func:`share` groups the
pipelines whose fronts are near-identical linear maps, so that an attack pays one member per group.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import codec
from .jpeg.transform import soft_roundtrip
from .models.classifier import predict_classes
from .models.fast import fast_classifier
from .registry import Registry, UnknownNameError
from .resize import DOWNSCALERS, PILLOW_FILTERS, center_crop_box, downscale, pillow_resize_crop, shorter_side_size

#: the grammar of a spec string, in one line (``advimage pipelines`` prints it)
SYNTAX = "RESIZE[+round][+bf16][+jpeg:Q]"

TORCH_FILTERS = ("bilinear", "bicubic")
CV2_FILTERS = ("area", "linear", "cubic", "lanczos")
PRECISIONS = ("fp32", "bf16")
#: the gradient of a ``+jpeg:Q`` stage (its value is always Pillow's real re-encode): ``identity``
#: (BPDA's straight-through) or ``cubic`` (:func:`advimage.jpeg.transform.soft_roundtrip` at 4:2:0)
JPEG_BACKWARDS = ("identity", "cubic")

#: the deployed-pipeline matrix of issue 24: what ``--victims common`` must fool
COMMON = ("pil-bilinear", "pil-bicubic", "pil-lanczos",
          "torch-bicubic", "torch-bicubic-noaa", "torch-bilinear", "torch-bilinear-noaa",
          "cv2-area", "cv2-linear", "cv2-cubic",
          "torch-bicubic+round", "pil-bicubic+bf16", "pil-bicubic+jpeg:90")

_JPEG = re.compile(r"jpeg:(\d+)")


class PipelineError(ValueError):
    """A pipeline spec or set that does not parse; the message says what is valid."""


class UnknownPipelineError(UnknownNameError, PipelineError):
    """An unknown resize (the head of a spec) or pipeline set."""


#: every RESIZE of the grammar -> its :class:`Pipeline` (no modifier), described; registered below the class
RESIZES: "Registry[Pipeline]" = Registry("resize", UnknownPipelineError)

#: named sets of pipelines (``--victims NAME``) -> their canonical specs
SETS: Registry[tuple[str, ...]] = Registry("pipeline set", UnknownPipelineError, label="valid sets")
SETS.register("common", COMMON, "the deployed-pipeline matrix of issue 24: Pillow, torchvision with and without "
              "antialias, OpenCV, clamp+round, bf16, JPEG q90 re-encode")
SETS.register("resizes", tuple(p for p in COMMON if "+" not in p), "the resizes of common, without modifiers")
SETS.register("pair", ("pil-bicubic", "torch-bicubic"), "Pillow's and torchvision's bicubic resize")
SETS.register("downscalers", DOWNSCALERS, "the six downscalers of thesis §9.3 (--ensemble)")


def resize_names() -> tuple[str, ...]:
    """Every RESIZE of the grammar, in :data:`RESIZES`'s order (Pillow, torchvision, OpenCV, §9.3)."""
    return tuple(RESIZES)


@dataclass(frozen=True)
class Pipeline:
    """One eval pipeline (module docstring). resize: a name of :func:`resize_names`; round:
    clamp + round after the resize; precision: ``fp32`` | ``bf16``; jpeg: re-encode quality or None."""

    resize: str
    round: bool = False
    precision: str = "fp32"
    jpeg: int | None = None

    @property
    def library(self) -> str:
        """``pil``, ``torch``, ``cv2`` or ``thesis`` (a §9.3 downscaler)."""
        head = self.resize.split("-")[0]
        return head if head in ("pil", "torch", "cv2") else "thesis"

    @property
    def filter(self) -> str:
        return self.resize.split("-")[1] if self.library != "thesis" else self.resize

    @property
    def antialias(self) -> bool:
        return not self.resize.endswith("-noaa")

    @property
    def spec(self) -> str:
        """The canonical spec string (modifiers in the grammar's order)."""
        return (self.resize + ("+round" if self.round else "") + ("+bf16" if self.precision == "bf16" else "")
                + (f"+jpeg:{self.jpeg}" if self.jpeg is not None else ""))

    # -- the real pipeline, on a file's bytes ------------------------------------------------
    def model_input(self, file: codec.Decoded | bytes, config: Any, crop_pct: float | None = None) -> Tensor:
        """What this pipeline feeds the network for a file (decoded once, or its bytes): float
        (3, S, S) in [0, 255].

        The file as Pillow decoded it (re-encoded by Pillow at ``jpeg`` first, if set), resized by
        the pipeline's own library, centre cropped, and rounded where the pipeline rounds."""
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        file = codec.decoded(file)
        if self.jpeg is not None:
            file = codec.decode_file(reencode(file, self.jpeg), ".jpg")
        S, scale = _sizes(config, crop_pct)
        if self.library == "pil":
            img = file.pil
            if img is None:
                raise ValueError(f"{self.spec}: a .npy file is no image for Pillow")
            out_hw = shorter_side_size(img.height, img.width, scale)
            img = img.resize((out_hw[1], out_hw[0]), getattr(Image.Resampling, self.filter.upper()))
            x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        else:
            u8 = file.pixels
            out_hw = shorter_side_size(u8.shape[1], u8.shape[2], scale)
            if self.library == "torch":
                x = TF.resize(u8.float(), list(out_hw), interpolation=InterpolationMode(self.filter),
                              antialias=self.antialias)
            elif self.library == "cv2":
                cv2 = _cv2()
                arr = cv2.resize(np.ascontiguousarray(u8.permute(1, 2, 0).numpy()), (out_hw[1], out_hw[0]),
                                 interpolation=_cv2_flag(self.filter))
                x = torch.from_numpy(arr).permute(2, 0, 1).float()
            else:
                x = downscale(u8.float()[None], out_hw, self.resize)[0]
        top, left = center_crop_box(out_hw[0], out_hw[1], S)
        x = x[..., top:top + S, left:left + S]
        return x.clamp(0, 255).round() if self.round else x

    # -- the differentiable layer --------------------------------------------------------------
    def front(self, config: Any, crop_pct: float | None = None, jpeg_backward: str = "identity") -> "PipelineFront":
        """The differentiable layer of this pipeline (everything before the network); ``jpeg_backward``:
        the gradient of its re-encode, one of :data:`JPEG_BACKWARDS`."""
        return PipelineFront(self, config, crop_pct, jpeg_backward)

    def linear_part(self) -> "Pipeline":
        """The same resize without rounding, precision or re-encode (what :func:`share` compares)."""
        return Pipeline(self.resize)


def _register_resizes() -> None:
    for f in PILLOW_FILTERS:
        RESIZES.register(f"pil-{f}", Pipeline(f"pil-{f}"), f"{f}: Pillow Image.resize on the PIL image (8-bit)")
    for f in TORCH_FILTERS:
        for aa, on in (("", "on"), ("-noaa", "off")):
            RESIZES.register(f"torch-{f}{aa}", Pipeline(f"torch-{f}{aa}"),
                             f"{f}: torchvision resize on the float tensor, antialias {on}")
    for f in CV2_FILTERS:
        RESIZES.register(f"cv2-{f}", Pipeline(f"cv2-{f}"), f"{f}: cv2.resize on the uint8 array")
    for f in DOWNSCALERS:
        RESIZES.register(f, Pipeline(f), f"{f}: thesis §9.3 downscaler on float pixels")


_register_resizes()


def parse(spec: str) -> Pipeline:
    """A spec string -> :class:`Pipeline`; raises :class:`PipelineError` naming what is valid."""
    if not isinstance(spec, str) or not spec:
        raise PipelineError(f"a pipeline spec is a non-empty string ({SYNTAX}), got {spec!r}")
    head, *mods = spec.split("+")
    if head not in RESIZES:
        raise RESIZES.unknown(head, context=f" in pipeline {spec!r}")
    kw: dict[str, Any] = {}
    for m in mods:
        if m in kw.values() or (m == "round" and "round" in kw) or (m == "bf16" and "precision" in kw):
            raise PipelineError(f"modifier {m!r} repeated in pipeline {spec!r}")
        if m == "round":
            if head.startswith(("pil-", "cv2-")):
                raise PipelineError(f"{head} already gives 8-bit pixels: '+round' changes nothing in {spec!r}")
            kw["round"] = True
        elif m == "bf16":
            kw["precision"] = "bf16"
        elif (j := _JPEG.fullmatch(m)) is not None:
            if "jpeg" in kw:
                raise PipelineError(f"'+jpeg' repeated in pipeline {spec!r}")
            q = int(j.group(1))
            if not 1 <= q <= 100:
                raise PipelineError(f"JPEG quality must be in 1..100, got {q} in {spec!r}")
            kw["jpeg"] = q
        else:
            raise PipelineError(f"unknown modifier {m!r} in pipeline {spec!r}; valid: round, bf16, jpeg:Q "
                                f"({SYNTAX})")
    p = Pipeline(head, **kw)
    if p.library == "cv2":
        _cv2()  # refuse now, not in the middle of a run
    return p


def resolve(victims: str | Sequence[str]) -> tuple[str, ...]:
    """A set name (:data:`SETS`) or a comma-separated list (or sequence) of specs -> canonical
    spec strings, in order, without repeats. Raises :class:`PipelineError`."""
    if isinstance(victims, str):
        if victims in SETS:
            return SETS.get(victims)
        items = [v.strip() for v in victims.split(",") if v.strip()]
        if len(items) == 1 and "+" not in items[0] and items[0] not in RESIZES:  # neither a set nor a resize
            raise RESIZES.unknown(items[0], hint=f"; or a set: {', '.join(SETS)}")
    else:
        items = list(victims)
    if not items:
        raise PipelineError(f"no pipeline given; a set ({', '.join(SETS)}) or specs {SYNTAX}")
    out: list[str] = []
    for it in items:
        if it in SETS:
            raise PipelineError(f"set {it!r} inside a list; give it alone or list its pipelines")
        s = parse(it).spec
        if s not in out:
            out.append(s)
    return tuple(out)


def names() -> list[str]:
    """The pipelines ``advimage pipelines`` lists: every resize, and the modified ones of the sets."""
    seen = list(RESIZES)
    for _, members in SETS.items():
        seen += [m for m in members if m not in seen]
    return seen


def describe(spec: str) -> str:
    """One line on what a pipeline does: its resize's description, then its modifiers."""
    p = parse(spec)
    extra = (["clamp + round to uint8"] if p.round else []) + (["bf16 inference"] if p.precision == "bf16" else []) \
        + ([f"Pillow JPEG re-encode q{p.jpeg} first (4:2:0)"] if p.jpeg is not None else [])
    return RESIZES.description(p.resize) + "".join(f"; {e}" for e in extra)


def reencode(file: codec.Decoded | bytes, quality: int) -> bytes:
    """Pillow's JPEG re-encode of a file (decoded, or its bytes) at ``quality`` with its defaults
    (4:2:0), as an uploader does."""
    img = codec.decoded(file).pil
    if img is None:
        raise ValueError("a .npy file is no image for Pillow")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _sizes(config: Any, crop_pct: float | None) -> tuple[int, int]:
    """(crop size S, shorter side before the crop) of a model config."""
    S = int(config.input_size)
    return S, math.floor(S / float(crop_pct or config.crop_pct))


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise PipelineError("the cv2-* pipelines need OpenCV: pip install 'advimage[opencv]' "
                            "(opencv-python-headless)") from exc
    return cv2


def _cv2_flag(filter: str) -> int:
    cv2 = _cv2()
    return {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
            "lanczos": cv2.INTER_LANCZOS4}[filter]


# -- differentiable fronts -----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def cv2_weights(in_size: int, out_size: int, filter: str) -> Tensor:
    """OpenCV's 1-D resampling weights (out, in) float64, read off ``cv2.resize`` on float64
    basis images (its float path: the weights its fixed-point 8-bit path rounds to 11 bits)."""
    cv2 = _cv2()
    eye = np.eye(in_size, dtype=np.float64)
    # resize the columns of the identity along the height only: out[:, j] = W @ e_j
    out = cv2.resize(eye, (in_size, out_size), interpolation=_cv2_flag(filter))
    return torch.from_numpy(np.ascontiguousarray(out))


class _ExactValue(torch.autograd.Function):
    """Value: ``exact`` (computed without gradient); gradient: that of ``linear`` (straight-through)."""

    @staticmethod
    def forward(ctx, linear: Tensor, exact: Tensor) -> Tensor:
        return exact

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


def _straight_through(linear: Tensor, exact: Tensor) -> Tensor:
    if torch.is_grad_enabled() and linear.requires_grad:
        return _ExactValue.apply(linear, exact.to(linear.dtype))
    return exact.to(linear.dtype)


def _cv2_resize_u8(x: Tensor, out_hw: tuple[int, int], filter: str) -> Tensor:
    """``cv2.resize`` of the rounded pixels, per image: float (N, 3, H, W) -> float (N, 3, h, w)."""
    cv2 = _cv2()
    u8 = x.detach().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = [cv2.resize(np.ascontiguousarray(img), (out_hw[1], out_hw[0]), interpolation=_cv2_flag(filter))
           for img in u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, torch.float32)


def _jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Pillow's re-encode at ``quality`` of the rounded pixels: float (N, 3, H, W) -> float, same shape."""
    u8 = x.detach().clamp(0, 255).round().to(torch.uint8).cpu()
    out = [codec.decode(reencode(codec.encode_png(img), quality)) for img in u8]
    return torch.stack(out).to(x.device, torch.float32)


class PipelineFront(nn.Module):
    """A pipeline's layers before the network: float (N, 3, H, W) in [0, 255], any H, W ->
    (N, 3, S, S). Exact where the pipeline is (module docstring); differentiable everywhere."""

    def __init__(self, pipeline: Pipeline, config: Any, crop_pct: float | None = None,
                 jpeg_backward: str = "identity") -> None:
        super().__init__()
        if jpeg_backward not in JPEG_BACKWARDS:
            raise PipelineError(f"unknown JPEG backward {jpeg_backward!r}; valid: {', '.join(JPEG_BACKWARDS)}")
        self.pipeline = pipeline
        self.jpeg_backward = jpeg_backward
        self.input_size, self.scale_size = _sizes(config, crop_pct)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pipeline
        if x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if p.jpeg is not None:  # BPDA: the real re-encode forward, an approximation's backward
            exact = _jpeg_roundtrip(x, p.jpeg)
            if self.jpeg_backward == "cubic" and torch.is_grad_enabled() and x.requires_grad:
                approx = soft_roundtrip(x, p.jpeg, subsampling=True)
                x = approx + (exact.to(approx.dtype) - approx).detach()
            else:
                x = _straight_through(x, exact)
        H, W = x.shape[-2:]
        out_hw = shorter_side_size(H, W, self.scale_size)
        S = self.input_size
        top, left = center_crop_box(out_hw[0], out_hw[1], S)
        if p.library == "pil":
            if (H, W) == out_hw:
                y = x[..., top:top + S, left:left + S]
            else:
                y = pillow_resize_crop(x, out_hw, top, left, (S, S), p.filter)
        elif p.library == "cv2":
            y = self._cv2(x, out_hw, top, left)
        else:
            if (H, W) == out_hw:
                y = x
            elif p.library == "torch":
                import torchvision.transforms.functional as TF
                from torchvision.transforms import InterpolationMode

                y = TF.resize(x, list(out_hw), interpolation=InterpolationMode(p.filter), antialias=p.antialias)
            else:
                y = downscale(x, out_hw, p.resize)
            y = y[..., top:top + S, left:left + S]
        if p.round:
            y = _straight_through(y, y.detach().clamp(0, 255).round())
        return y

    def _cv2(self, x: Tensor, out_hw: tuple[int, int], top: int, left: int) -> Tensor:
        S = self.input_size
        H, W = x.shape[-2:]
        if (H, W) == out_hw:  # cv2.resize to the same size copies
            y = x.detach().clamp(0, 255).round()
            return _straight_through(x, y)[..., top:top + S, left:left + S]
        kh = cv2_weights(H, out_hw[0], self.pipeline.filter)[top:top + S].to(x.device, x.dtype)
        kw = cv2_weights(W, out_hw[1], self.pipeline.filter)[left:left + S].to(x.device, x.dtype)
        linear = kh @ x @ kw.T
        with torch.no_grad():
            exact = _cv2_resize_u8(x, out_hw, self.pipeline.filter)[..., top:top + S, left:left + S]
        return _straight_through(linear, exact)

    def extra_repr(self) -> str:
        back = f", jpeg_backward={self.jpeg_backward!r}" if self.pipeline.jpeg is not None else ""
        return f"{self.pipeline.spec!r}, input_size={self.input_size}, scale_size={self.scale_size}{back}"


class PipelineClassifier(nn.Module):
    """One model behind several pipelines: float (N, 3, H, W) -> logits (N, P, C), one per pipeline.

    The P crops go through the network as one batch per precision (fp32 members together, bf16
    ones under autocast). ``fronts``, ``members`` and ``aggregation`` are what the loss oracle's
    ensemble gradients use (thesis §9.4.5; see :class:`~advimage.models.protocol.MultiPathClassifier`).
    one_member_max: the oracle's ``max`` gradient backpropagates only the member attaining the max
    (:meth:`member`; ``--victims``); False: one backward through every member, as
    :class:`~advimage.models.protocol.MultiPathClassifier` does (the ``--victim`` and ``--ensemble``
    spellings, whose rows stay bit-identical to that class's). jpeg_backward: the gradient of the
    ``+jpeg:Q`` members' re-encode (:data:`JPEG_BACKWARDS`).
    """

    def __init__(self, base: nn.Module, specs: Sequence[str], aggregation: str = "max",
                 crop_pct: float | None = None, share: float = 0.0, one_member_max: bool = True,
                 jpeg_backward: str = "identity") -> None:
        from .models.protocol import AGGREGATIONS

        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        pipes = [parse(s) for s in specs]
        if not pipes:
            raise PipelineError("a pipeline classifier needs at least one pipeline")
        self.base: Any = base  # a classifier (config, class names, device), not only a module
        self.specs = [p.spec for p in pipes]
        self.fronts = nn.ModuleList([p.front(base.config, crop_pct, jpeg_backward) for p in pipes])
        self.jpeg_backward = jpeg_backward
        self.precisions = [p.precision for p in pipes]
        self.aggregation = aggregation
        self.crop_pct = crop_pct
        self.share = float(share)
        self.one_member_max = bool(one_member_max)
        self.config = base.config
        self.class_names: list[str] = [str(n) for n in getattr(base, "class_names")]  # noqa: B009
        self._shared: dict[tuple[int, int], PipelineClassifier] = {}
        self.eval()

    def shared(self, size: tuple[int, int]) -> "PipelineClassifier":
        """The classifier over one member per group of :func:`share` for inputs of ``size`` (H, W)
        (itself when no two pipelines share); cached per size."""
        if self.share <= 0 or len(self.specs) == 1:
            return self
        size = (int(size[0]), int(size[1]))
        if size not in self._shared:
            groups = share(self.specs, self.config, size, self.share, self.crop_pct)
            self._shared[size] = (self if len(groups) == len(self.specs) else
                                  PipelineClassifier(self.base, [g[0] for g in groups], self.aggregation,
                                                     self.crop_pct, one_member_max=self.one_member_max,
                                                     jpeg_backward=self.jpeg_backward))
        return self._shared[size]

    def _net(self, precision: str) -> nn.Module:
        return fast_classifier(self.base, precision=precision)

    def _classify(self, crops: list[Tensor]) -> Tensor:
        n = crops[0].shape[0]
        out: list[Tensor | None] = [None] * len(crops)
        for prec in dict.fromkeys(self.precisions):
            ks = [k for k, p in enumerate(self.precisions) if p == prec]
            logits = self._net(prec)(torch.cat([crops[k] for k in ks]))
            for i, k in enumerate(ks):
                out[k] = logits[i * n:(i + 1) * n]
        return torch.stack(out, 1)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self._classify([f(x) for f in self.fronts])

    def member(self, k: int, x: Tensor) -> Tensor:
        """Logits (N, C) of pipeline k alone (what the loss oracle's ``max`` gradient backpropagates)."""
        return self._net(self.precisions[k])(self.fronts[k](x))

    def members(self, xs: Tensor) -> Tensor:
        """Logits (N, P, C) where member k sees its own copy ``xs[:, k]`` (xs: (N, P, 3, H, W))."""
        return self._classify([f(xs[:, k]) for k, f in enumerate(self.fronts)])

    @property
    def device(self) -> torch.device:
        return self.base.device

    def predict(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """Classes (N,) on the first pipeline."""
        return predict_classes(self, x, batch_size)

    def class_name(self, index: int) -> str:
        return self.base.class_name(index)

    def extra_repr(self) -> str:
        return f"specs={self.specs!r}, aggregation={self.aggregation!r}"


def classify_input(model: nn.Module, spec: str, x: Tensor) -> Tensor:
    """Logits (N, C) of the model on pipeline inputs x (N, 3, S, S) in the pipeline's precision."""
    return fast_classifier(model, precision=parse(spec).precision)(x)


# -- sharing ---------------------------------------------------------------------------------------
def front_distance(a: str, b: str, config: Any, size: tuple[int, int], crop_pct: float | None = None,
                   seed: int = 0) -> float:
    """How far two pipelines' linear parts are on perturbation-like content: ``‖A p − B p‖ / ‖A p‖``
    for white noise p (128 + 30 N(0, 1) pixels) of ``size = (H, W)``; 0 for pipelines that differ only in
    rounding, precision or re-encode."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(1, 3, *size, generator=g, dtype=torch.float64) * 30 + 128
    with torch.no_grad():
        ya = parse(a).linear_part().front(config, crop_pct)(p.float()).double() - 128
        yb = parse(b).linear_part().front(config, crop_pct)(p.float()).double() - 128
    return float((ya - yb).norm() / ya.norm().clamp_min(1e-12))


def share(specs: Sequence[str], config: Any, size: tuple[int, int], tolerance: float = 0.1,
          crop_pct: float | None = None) -> list[list[str]]:
    """Groups of ``specs`` whose linear parts are within ``tolerance`` (:func:`front_distance`) of
    the group's first member, greedily in order; a ``+jpeg`` pipeline always has its own group
    (its re-encode is not a linear map). The attack can then go through the first of each group."""
    groups: list[list[str]] = []
    for s in specs:
        if parse(s).jpeg is None:
            for g in groups:
                if parse(g[0]).jpeg is None and front_distance(g[0], s, config, size, crop_pct) <= tolerance:
                    g.append(s)
                    break
            else:
                groups.append([s])
        else:
            groups.append([s])
    return groups


@torch.no_grad()
def fooled_through(model: Any, data: codec.Decoded | bytes, label: int, specs: Sequence[str],
                   config: Any = None) -> dict[str, bool]:
    """Whether a file (its bytes, decoded once here) fools ``model`` (untargeted: top-1 ≠ ``label``)
    through each pipeline of ``specs``, every pipeline run by its own libraries (:meth:`Pipeline.model_input`)."""
    config = config or model.config
    file = codec.decoded(data)
    out: dict[str, bool] = {}
    for s in specs:
        x = parse(s).model_input(file, config)[None].to(model.device)
        out[s] = int(classify_input(model, s, x).argmax(1)[0]) != int(label)
    return out
