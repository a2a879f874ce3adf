"""advimage.resize: Pillow-exact resampling, the six Ch. 9 downscalers, the eval resize + crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import InterpolationMode

from advimage.resize import (
    DOWNSCALERS,
    PILLOW_FILTERS,
    RESIZE_METHODS,
    Downscaler,
    EvalTransform,
    PillowResize,
    Resize,
    center_crop_box,
    downscale,
    kernel_size,
    pillow_coefficients,
    pillow_resize,
    pillow_vertical_first,
    resize,
    shorter_side_size,
)

PIL_FILTER = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}


def _random_u8(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gradient_u8(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 127.5 + 127.5 * np.sin(xx / 3.0 + yy / 5.0)], -1)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float()


def _pil_resize(a: np.ndarray, size: tuple[int, int], filter: str) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(a).resize((w, h), PIL_FILTER[filter]))


def _ours(a: np.ndarray, size: tuple[int, int], filter: str) -> np.ndarray:
    y = pillow_resize(_to_tensor(a), size, filter, rounding=True)
    assert y.dtype == torch.float32 and torch.equal(y, y.round())
    return y[0].permute(1, 2, 0).numpy().astype(np.uint8)


# ----------------------------------------------------------------------------- Pillow, exact


CASES = [
    ((375, 500), (256, 341)),  # (H, W) -> (h, w): 500x375 -> 341x256 in Pillow's (w, h)
    ((53, 37), (23, 16)),
    ((37, 53), (16, 23)),
    ((13, 17), (40, 29)),  # upscale
    ((9, 30), (25, 12)),  # one axis up, one down
    ((30, 40), (30, 17)),  # width only
    ((30, 40), (11, 40)),  # height only
    ((60, 8), (41, 1)),  # Pillow 13 runs the vertical pass first here
    ((2, 2), (1, 6)),
]


@pytest.mark.parametrize("filter", ["bicubic", "bilinear", "box"])
@pytest.mark.parametrize(("src", "dst"), CASES)
def test_pillow_resize_is_bit_exact(filter, src, dst):
    for a in (_random_u8(*src, seed=sum(src) + sum(dst)), _gradient_u8(*src)):
        np.testing.assert_array_equal(_ours(a, dst, filter), _pil_resize(a, dst, filter))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    H=st.integers(1, 40), W=st.integers(1, 40), h=st.integers(1, 40), w=st.integers(1, 40),
    filter=st.sampled_from(sorted(PILLOW_FILTERS)), seed=st.integers(0, 2**16),
)
def test_pillow_resize_is_bit_exact_random_sizes(H, W, h, w, filter, seed):
    a = _random_u8(H, W, seed)
    np.testing.assert_array_equal(_ours(a, (h, w), filter), _pil_resize(a, (h, w), filter))


def test_pillow_pass_order_matters_and_is_followed():
    # 2x2 -> 1x6: height halves, width triples, so the vertical pass runs first in Pillow >= 13;
    # the other order rounds the 8-bit intermediate differently.
    a = np.array([[1, 89], [56, 141]], dtype=np.uint8)
    ref = np.asarray(Image.fromarray(a).resize((6, 1), Image.Resampling.BILINEAR))
    ours = pillow_resize(torch.from_numpy(a)[None, None].double(), (1, 6), "bilinear")[0, 0].numpy()
    np.testing.assert_array_equal(ours, ref)
    assert pillow_vertical_first((2, 2), (1, 6)) == (int(Image.__version__.split(".")[0]) >= 13)
    assert not pillow_vertical_first((8, 60), (1, 41))  # height grows: horizontal first
    assert not pillow_vertical_first((20, 20), (10, 10))  # H - h = 2 (W - w) is not enough


def test_pillow_resize_same_size_is_identity_and_keeps_dtype():
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64) * 255
    assert torch.equal(pillow_resize(x, (7, 9)), x)
    y = pillow_resize(x.round(), (4, 9), "bilinear")
    assert y.dtype == torch.float64 and y.shape == (2, 3, 4, 9)


def test_pillow_coefficients_rows_and_known_values():
    for filter in PILLOW_FILTERS:
        for n_in, n_out in [(500, 341), (37, 16), (13, 40), (7, 7), (600, 224), (1, 5), (5, 1)]:
            real, fixed = pillow_coefficients(n_in, n_out, filter)
            assert real.shape == fixed.shape == (n_out, n_in)
            assert real.dtype == torch.float64 and fixed.dtype == torch.int64
            torch.testing.assert_close(real.sum(1), torch.ones(n_out, dtype=torch.float64), rtol=0, atol=1e-12)
            taps = (real != 0).sum(1)
            assert ((fixed.sum(1) - 2**22).abs() <= taps // 2 + 1).all()
            assert ((fixed - torch.round(real * 2**22)).abs() <= 1).all()
    # bilinear 4 -> 2: centre 1.0, support 2, taps at x = 0, 1, 2 with weights 0.75, 0.75, 0.25 / 1.75
    real, fixed = pillow_coefficients(4, 2, "bilinear")
    torch.testing.assert_close(real[0], torch.tensor([3 / 7, 3 / 7, 1 / 7, 0], dtype=torch.float64))
    assert fixed[0].tolist() == [int(0.5 + 3 / 7 * 2**22), int(0.5 + 3 / 7 * 2**22), int(0.5 + 1 / 7 * 2**22), 0]
    # bicubic has negative lobes, rounded away from zero
    _, fixed = pillow_coefficients(10, 23, "bicubic")
    assert (fixed < 0).any()
    with pytest.raises(ValueError, match="bicubic"):
        pillow_coefficients(4, 2, "cubic")


# ----------------------------------------------------------------------------- Pillow, gradients


def test_pillow_linear_map_gradcheck():
    x = torch.rand(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    for size in [(3, 4), (8, 4), (5, 3), (2, 7)]:
        assert torch.autograd.gradcheck(lambda t: pillow_resize(t, size, "bicubic", rounding=False), (x,))  # noqa: B023


@pytest.mark.parametrize("size", [(4, 6), (13, 5), (9, 11)])
def test_pillow_rounding_is_straight_through(size):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (2, 3, 9, 11), generator=g).double()
    upstream = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    grads = {}
    for rounding in (True, False):
        x = x0.clone().requires_grad_(True)
        y = pillow_resize(x, size, "bicubic", rounding=rounding)
        (y * upstream).sum().backward()
        grads[rounding] = x.grad
        if rounding:  # the value is still bit-exact with autograd on
            assert torch.equal(y.detach(), pillow_resize(x0, size, "bicubic", rounding=True))
    torch.testing.assert_close(grads[True], grads[False], rtol=0, atol=0)
    # and it is the transpose of the fixed-point linear map: dL/dX = Kh^T G Kw / 2^44
    kh = pillow_coefficients(9, size[0], "bicubic")[1].double() / 2**22
    kw = pillow_coefficients(11, size[1], "bicubic")[1].double() / 2**22
    if size[0] == 9:
        kh = torch.eye(9, dtype=torch.float64)
    if size[1] == 11:
        kw = torch.eye(11, dtype=torch.float64)
    torch.testing.assert_close(grads[False], kh.T @ upstream @ kw, rtol=1e-12, atol=1e-12)


def test_pillow_resize_module_caches_and_matches_function():
    m = PillowResize((16, 23), "bilinear")
    x = _to_tensor(_random_u8(37, 53, seed=3))
    y = m(x)
    assert torch.equal(y, pillow_resize(x, (16, 23), "bilinear"))
    assert set(k[:2] for k in m._cache) == {(53, 23), (37, 16)}
    assert torch.equal(m(x), y)
    assert m.size == (16, 23) and m.filter == "bilinear" and m.rounding
    lin = PillowResize((16, 23), "bilinear", rounding=False)(x)
    assert (lin - y).abs().max() <= 1.0


# ----------------------------------------------------------------------------- thesis Sect. 9.3 downscalers


def test_kernel_size():
    assert kernel_size(600, 224) == 3
    assert kernel_size(600, 256) == 3
    assert kernel_size(600, 300) == 2
    assert kernel_size(600, 528) == 2
    assert kernel_size(600, 600) == 1
    assert kernel_size(224, 600) == 1


@pytest.mark.parametrize("method", DOWNSCALERS)
def test_downscaler_shapes_constant_and_identity(method):
    x = torch.rand(2, 3, 31, 26)
    for size in [(12, 9), (31, 13), (7, 26), (40, 30)]:
        y = downscale(x, size, method)
        assert y.shape == (2, 3, *size) and y.dtype == x.dtype
    c = torch.full((1, 3, 31, 26), 117.0)
    for size in [(12, 9), (5, 4), (1, 1)]:
        torch.testing.assert_close(downscale(c, size, method), torch.full((1, 3, *size), 117.0), rtol=0, atol=1e-3)
    assert torch.equal(downscale(x, (31, 26), method), x)
    m = Downscaler(12, method)
    assert m.size == (12, 12) and m.method == method
    assert torch.equal(m(x), downscale(x, (12, 12), method))


def test_nearest_picks_source_pixels():
    x = torch.arange(3 * 12 * 15, dtype=torch.float32).reshape(1, 3, 12, 15)
    y = downscale(x, (5, 4), "nearest")
    rows = [math.floor(i * 12 / 5) for i in range(5)]
    cols = [math.floor(j * 15 / 4) for j in range(4)]
    assert torch.equal(y, x[:, :, rows][:, :, :, cols])


def test_area_with_integer_factor_is_average_pooling():
    x = torch.rand(2, 3, 24, 18) * 255
    torch.testing.assert_close(downscale(x, (8, 6), "area"), F.avg_pool2d(x, 3))
    torch.testing.assert_close(downscale(x, (12, 6), "area"), F.avg_pool2d(x, (2, 3)))


def test_bilag_with_odd_integer_factor_is_average_pooling():
    # k = 3 box centred on each 3x3 block, then bilinear samples exactly the block centres
    x = torch.rand(1, 3, 27, 18, dtype=torch.float64) * 255
    torch.testing.assert_close(downscale(x, (9, 6), "bilag"), F.avg_pool2d(x, 3))


@pytest.mark.parametrize("method", ["bilag", "bilg"])
def test_antialiased_downscalers_are_linear_and_differentiable(method):
    g = torch.Generator().manual_seed(1)
    x, z = (torch.rand(2, 3, 23, 17, generator=g, dtype=torch.float64) * 255 for _ in range(2))
    a, b = 0.7, -1.9
    lhs = downscale(a * x + b * z, (7, 5), method)
    torch.testing.assert_close(lhs, a * downscale(x, (7, 5), method) + b * downscale(z, (7, 5), method))
    # Gaussian support (31 taps for k = 3) exceeds the image: reflect padding extends periodically
    t = torch.rand(1, 1, 12, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: downscale(v, (4, 3), method), (t,))


def test_bilg_blurs_more_than_bilag():
    # a vertical stripe pattern of period 2 px is removed by both, an edge is smeared wider by BilG
    x = torch.zeros(1, 1, 60, 60, dtype=torch.float64)
    x[..., :, 30:] = 255.0
    ag, g = downscale(x, (20, 20), "bilag")[0, 0, 0], downscale(x, (20, 20), "bilg")[0, 0, 0]
    assert ((ag > 1) & (ag < 254)).sum() < ((g > 1) & (g < 254)).sum()


# ----------------------------------------------------------------------------- eval resize


def test_unknown_names_raise_value_error_with_the_list():
    x = torch.zeros(1, 3, 8, 8)
    for call in (
        lambda: downscale(x, (4, 4), "lanczos"),
        lambda: Downscaler((4, 4), "lanczos"),
        lambda: resize(x, (4, 4), "lanczos"),
        lambda: Resize((4, 4), "lanczos"),
        lambda: EvalTransform(4, 0.875, "lanczos"),
    ):
        with pytest.raises(ValueError, match="nearest, bilinear, bicubic, area, bilag, bilg") as exc:
            call()
        assert "lanczos" in str(exc.value)
    with pytest.raises(ValueError, match="pil-bicubic"):
        resize(x, (4, 4), "pil-lanczos")


@pytest.mark.parametrize("method", RESIZE_METHODS)
def test_resize_dispatch(method):
    x = _to_tensor(_random_u8(21, 30, seed=7))
    y = resize(x, (10, 13), method)
    assert y.shape == (1, 3, 10, 13)
    assert torch.equal(Resize((10, 13), method)(x), y)
    if method.startswith("torch-"):
        ref = TF.resize(x, [10, 13], interpolation=InterpolationMode(method[6:]), antialias=True)
    elif method.startswith("pil-"):
        ref = pillow_resize(x, (10, 13), method[4:], rounding=True)
    else:
        ref = downscale(x, (10, 13), method)
    assert torch.equal(y, ref)
    xg = x.clone().requires_grad_(True)  # every method is differentiable (Pillow: straight-through)
    resize(xg, (10, 13), method).square().sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    c = torch.full((1, 3, 21, 30), 200.0)
    torch.testing.assert_close(resize(c, (10, 13), method), torch.full((1, 3, 10, 13), 200.0), rtol=0, atol=1e-3)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (53, 37), (41, 41), (101, 33), (30, 31)])
def test_shorter_side_size_matches_torchvision(h, w):
    img = Image.fromarray(_random_u8(h, w, seed=0))
    for short in (16, 29, 32):
        out = TF.resize(img, short)
        assert shorter_side_size(h, w, short) == (out.height, out.width)


@pytest.mark.parametrize(
    ("h", "w", "size"), [(10, 10, 4), (11, 10, 4), (10, 13, 4), (9, 8, 8), (256, 341, 224), (7, 8, 1)]
)
def test_center_crop_box_matches_torchvision(h, w, size):
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    top, left = center_crop_box(h, w, size)
    assert torch.equal(x[..., top:top + size, left:left + size], TF.center_crop(x, [size, size]))


def test_center_crop_box_rejects_oversized_crop():
    with pytest.raises(ValueError):
        center_crop_box(10, 20, 11)


def test_eval_transform_pil_bicubic_equals_torchvision_on_pil():
    a = _random_u8(263, 291, seed=11)
    ref = T.Compose([T.Resize(256, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(224)])(Image.fromarray(a))
    t = EvalTransform(224, 0.875, "pil-bicubic")
    assert t.method == "pil-bicubic"
    assert t.resized_size(263, 291) == (256, 283)
    y = t(_to_tensor(a))
    assert y.shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(y[0].permute(1, 2, 0).numpy().astype(np.uint8), np.asarray(ref))


def test_eval_transform_torch_bicubic_equals_torchvision_on_tensor():
    x = _to_tensor(_gradient_u8(90, 70)).repeat(2, 1, 1, 1)
    t = EvalTransform(48, 0.9, "torch-bicubic")
    s = math.floor(48 / 0.9)
    ref = TF.center_crop(TF.resize(x, s, interpolation=InterpolationMode.BICUBIC, antialias=True), [48, 48])
    y = t(x)
    assert y.shape == (2, 3, 48, 48)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["pil-bilinear", "area", "bilg"])
def test_eval_transform_any_input_size(method):
    t = EvalTransform(16, 0.875, method)
    for h, w in [(18, 18), (25, 40), (61, 19), (10, 12)]:
        y = t(torch.rand(1, 3, h, w) * 255)
        assert y.shape == (1, 3, 16, 16)
        assert t.resized_size(h, w) == shorter_side_size(h, w, 18)


@pytest.mark.parametrize("shape,size,box", [((375, 500), (256, 341), (16, 58)), ((500, 333), (384, 256), (80, 16)),
                                            ((40, 48), (32, 38), (0, 3)), ((30, 200), (26, 64), (1, 20))])
def test_crop_aware_pillow_resize_equals_resize_then_crop(shape, size, box):
    from advimage.resize import pillow_resize_crop

    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 3, *shape), generator=g).double()
    crop = (min(24, size[0] - box[0]), min(24, size[1] - box[1]))
    full = pillow_resize(x, size, "bicubic")[..., box[0]:box[0] + crop[0], box[1]:box[1] + crop[1]]
    part = pillow_resize_crop(x, size, box[0], box[1], crop, "bicubic")
    assert torch.equal(full, part)
    # same straight-through gradient as the full resize followed by the crop
    up = torch.randn(part.shape, generator=g, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (pillow_resize(xa, size, "bicubic")[..., box[0]:box[0] + crop[0], box[1]:box[1] + crop[1]] * up).sum().backward()
    (pillow_resize_crop(xb, size, box[0], box[1], crop, "bicubic") * up).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
