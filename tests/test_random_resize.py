"""The random-resize defense (thesis §9.5) draws among deployed pipelines' fronts: the six
downscalers give exactly what the former ``EvalTransform`` construction gave, other pipelines
(Pillow, torchvision, OpenCV, ``+round``) join the pool, ``+bf16`` / ``+jpeg:Q`` are refused."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import Tensor, nn

from advimage.defenses.random_resize import RandomDownscale, RandomResizeDefense
from advimage.models import ModelConfig, PixelClassifier
from advimage.pipelines import PipelineError, UnknownPipelineError, parse
from advimage.resize import DOWNSCALERS, EvalTransform, resize, shorter_side_size

HAVE_CV2 = importlib.util.find_spec("cv2") is not None


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1))


def classifier(crop_pct: float = 1.0) -> PixelClassifier:
    config = ModelConfig(name="small", input_size=16, crop_pct=crop_pct, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=5)
    return PixelClassifier(_Net(), config, [f"c{i}" for i in range(5)]).eval()


def images(n: int, h: int, w: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, h, w, generator=g) * 255).round()


class OldRandomDownscale(nn.Module):
    """The former construction, kept here as the independent reference: one ``EvalTransform`` per
    downscaler, and the same draws (intermediate size, then one index per image)."""

    def __init__(self, input_size: int, crop_pct: float, intermediate: int = 0) -> None:
        super().__init__()
        self.fronts = nn.ModuleList([EvalTransform(input_size, crop_pct, m) for m in DOWNSCALERS])
        self.input_size, self.intermediate = input_size, intermediate

    def forward(self, x: Tensor) -> Tensor:
        if self.intermediate:
            lo = self.input_size
            short = int(torch.randint(lo, lo + self.intermediate + 1, ()).item())
            x = resize(x, shorter_side_size(x.shape[-2], x.shape[-1], short), "bilinear")
        choice = torch.randint(len(self.fronts), (x.shape[0],))
        out = x.new_empty(x.shape[0], x.shape[1], self.input_size, self.input_size)
        for k in choice.unique().tolist():
            idx = (choice == k).nonzero().flatten()
            out = out.index_copy(0, idx, self.fronts[k](x.index_select(0, idx)))
        return out


# -- behaviour unchanged -------------------------------------------------------------------------
@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
@pytest.mark.parametrize("hw", [(40, 40), (16, 16), (18, 18), (31, 47), (23, 17)])
def test_downscaler_fronts_equal_the_former_eval_transforms(crop_pct, hw):
    """Bit-equal (torch.equal): a §9.3 downscaler's front and EvalTransform run the same ops in the
    same order (``resize.downscale`` on the shorter-side size, then the same crop; the identity
    when the input is already at that size: 16 px at crop 1.0, 18 px at 0.875)."""
    x = images(2, *hw, seed=hw[0])
    fronts = RandomDownscale(16, crop_pct).fronts
    assert len(fronts) == len(DOWNSCALERS)
    for m, front in zip(DOWNSCALERS, fronts):
        new = front(x)
        assert new.shape == (2, 3, 16, 16)
        assert torch.equal(new, EvalTransform(16, crop_pct, m)(x)), m


@pytest.mark.parametrize("intermediate", [0, 8])
@pytest.mark.parametrize("crop_pct, hw", [(1.0, (40, 40)), (0.875, (31, 47)), (1.0, (16, 16))])
def test_defense_logits_equal_the_former_construction(intermediate, crop_pct, hw):
    base = classifier(crop_pct)
    x = images(12, *hw, seed=7)
    old = OldRandomDownscale(16, crop_pct, intermediate)
    new = RandomResizeDefense(base, intermediate=intermediate)
    for seed in (0, 1):
        torch.manual_seed(seed)
        ref = base(old(x))
        torch.manual_seed(seed)
        out = new(x)
        assert torch.equal(out, ref)
    assert new.front.last_choice is not None and len(set(new.front.last_choice.tolist())) > 1


def test_default_pool_and_the_methods_alias():
    base = classifier()
    assert RandomResizeDefense(base).front.pipelines == DOWNSCALERS
    assert RandomResizeDefense(base, pipelines="downscalers").front.pipelines == DOWNSCALERS
    assert RandomDownscale(16, 1.0, DOWNSCALERS).pipelines == DOWNSCALERS  # the former positional form
    d = RandomResizeDefense(base, methods=("nearest", "area"))
    assert d.front.pipelines == d.front.methods == ("nearest", "area")
    with pytest.raises(ValueError, match="not both"):
        RandomResizeDefense(base, pipelines=("nearest",), methods=("area",))
    with pytest.raises(ValueError, match="at least one"):
        RandomResizeDefense(base, methods=())
    with pytest.raises(ValueError, match="crop_pct"):
        RandomResizeDefense(base, crop_pct=1.5)


# -- pipelines beyond the downscalers ------------------------------------------------------------
def test_pool_of_deployed_pipelines_uses_each_drawn_front():
    """``pil-bicubic,cv2-area,torch-bilinear-noaa`` (and ``+round``): each image's logits are the
    model's on the front of the pipeline drawn for it, forward and gradient."""
    specs = ["pil-bicubic", "cv2-area", "torch-bilinear-noaa", "torch-bicubic+round"]
    if not HAVE_CV2:
        specs.remove("cv2-area")
    base = classifier(0.875)
    defense = RandomResizeDefense(base, pipelines=",".join(specs))
    assert defense.front.pipelines == tuple(specs)
    x = images(16, 37, 29, seed=3)
    torch.manual_seed(0)
    xg = x.clone().requires_grad_(True)
    logits = defense(xg)
    choice = defense.front.last_choice
    assert choice is not None and set(choice.tolist()) == set(range(len(specs)))  # seed fixed: all drawn
    logits.square().sum().backward()
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        ref = base(parse(specs[int(choice[i])]).front(base.config)(xi))
        ref.square().sum().backward()
        assert torch.allclose(logits[i], ref[0], atol=1e-5), specs[int(choice[i])]
        assert torch.allclose(xg.grad[i], xi.grad[0], atol=1e-6, rtol=1e-4), specs[int(choice[i])]
    rounded = [i for i in range(len(x)) if specs[int(choice[i])].endswith("+round")]
    crops = defense.front.fronts[specs.index("torch-bicubic+round")](x[rounded])
    assert torch.equal(crops, crops.round())
    if not HAVE_CV2:
        pytest.skip("opencv is not installed: the cv2-area member was left out (the others passed)")


@pytest.mark.parametrize("pipelines, match", [
    ("pil-bicubic+bf16", r"\+bf16 is the network's precision"),
    (("nearest", "pil-bicubic+jpeg:90"), r"\+jpeg:Q re-encodes the uploaded file"),
    ("common", r"refuses 'pil-bicubic\+bf16'"),  # a set with modified members
])
def test_bf16_and_jpeg_members_are_refused(pipelines, match):
    with pytest.raises(PipelineError, match=match):
        RandomResizeDefense(classifier(), pipelines=pipelines)


@pytest.mark.parametrize("pipelines", ["nope", ("nearest", "nope"), "nearest,nope"])
def test_unknown_pipeline_names_list_the_valid_ones(pipelines):
    with pytest.raises(UnknownPipelineError, match="valid resizes: .*pil-bicubic.*torch-bilinear-noaa"):
        RandomResizeDefense(classifier(), pipelines=pipelines)
