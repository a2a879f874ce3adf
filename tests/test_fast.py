"""Faster attack passes (bf16 autocast, channels_last, torch.compile): same classifier within the
precision asked, gradients to fp32 pixels, and files verified by the fp32 model whatever the passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import advimage
from advimage.data import ImageItem
from advimage.engine import Settings, run_batch
from advimage.models import ModelConfig, PixelClassifier
from advimage.models.fast import FastClassifier, fast_classifier
from conftest import TinyConvNet


def _classifier(net: nn.Module, size: int = 16) -> PixelClassifier:
    config = ModelConfig(name="fast-test", input_size=size, crop_pct=1.0, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=10)
    return PixelClassifier(net, config, [f"c{i}" for i in range(10)])


@pytest.fixture
def conv_classifier():
    return _classifier(TinyConvNet(seed=1))


def test_channels_last_gives_the_fp32_logits_and_gradients(conv_classifier):
    x = (torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).requires_grad_(True)
    fast = fast_classifier(conv_classifier, channels_last=True)
    out = fast(x)
    (g_fast,) = torch.autograd.grad(out.sum(), x)
    ref = conv_classifier(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-7)


def test_bf16_logits_are_fp32_tensors_within_bf16_precision(conv_classifier):
    x = (torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).requires_grad_(True)
    fast = fast_classifier(conv_classifier, precision="bf16")
    out = fast(x)
    ref = conv_classifier(x)
    assert out.dtype == torch.float32
    scale = ref.abs().max()
    err = (out - ref).abs().max()
    assert 0 < err < 0.05 * scale  # bf16 (8 bits of mantissa) changes the logits, a little
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.dtype == torch.float32 and g.abs().sum() > 0


def test_fast_classifier_is_cached_per_model_and_options_and_shares_weights(conv_classifier):
    assert fast_classifier(conv_classifier) is conv_classifier
    a = fast_classifier(conv_classifier, precision="bf16")
    assert fast_classifier(conv_classifier, precision="bf16") is a
    assert fast_classifier(conv_classifier, precision="bf16", channels_last=True) is not a
    assert {id(p) for p in a.parameters()} == {id(p) for p in conv_classifier.parameters()}
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        FastClassifier(conv_classifier, precision="fp16")


def test_compiled_classifier_matches_eager(conv_classifier):
    fast = fast_classifier(conv_classifier, compile=True)
    for n in (3, 5):  # dynamic shapes: a shrinking batch must not break it
        x = (torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(n)) * 255).requires_grad_(True)
        out = fast(x)
        (g,) = torch.autograd.grad(out.sum(), x)
        ref = conv_classifier(x)
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_settings_record_the_passes_only_when_set():
    assert "passes" not in Settings().identity()  # earlier runs' stores keep their settings hash
    assert Settings(precision="bf16", channels_last=True).identity()["passes"] == {
        "precision": "bf16", "channels_last": True, "compile": False}
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        Settings(precision="half")
    with pytest.raises(ValueError, match="not to a regressor"):
        Settings(precision="bf16", target_score=30.0)


class _AutocastLiar(nn.Module):
    """A linear classifier whose logits are rolled by one class under autocast: every image looks
    misclassified to bf16 passes, none to the fp32 model."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.linear = nn.Linear(3 * 16 * 16, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 3 * 16 * 16, generator=g))

    def forward(self, x):
        logits = self.linear(x.float().flatten(1)).float()
        return logits.roll(1, dims=1) if torch.is_autocast_enabled("cpu") else logits


def test_bf16_success_is_never_reported_without_fp32_confirmation(tmp_path):
    model = _classifier(_AutocastLiar())
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(path))
    rows = run_batch(model, items, Settings(steps=10, quantizers=("scaled",), size="model", precision="bf16"))
    for row in rows:
        # the originals are checked in fp32 (under autocast every one would look misclassified) ...
        assert row.status != "misclassified"
        # ... the quantizer runs in fp32 too: the bf16 attack "succeeds" at once, the file does not ...
        assert row.quantize_success is False
        # ... and the file is verified by the fp32 model
        x = advimage.codec.decode(row.data).float()[None]
        fooled = bool(model(x).argmax(1).item() != row.label)
        assert row.verified == fooled and not fooled and row.status == "failed"
    plain = run_batch(model, items, Settings(steps=10, quantizers=("scaled",), size="model"))
    assert all(r.status == "fooled" for r in plain)  # the same attack in fp32 fools the model


def test_cli_passes_reach_the_engine_and_the_bench_records_them(tmp_path, tiny_registered):
    import json

    from advimage.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "bench"
    assert main(["bench", str(folder), "--models", tiny_registered, "--attacks", "bp", "--steps", "12",
                 "--precision", "bf16", "--channels-last", "--out", str(out), "--quiet"]) == 0
    jobs = json.loads((out / "settings.json").read_text())["settings"]["jobs"]
    assert jobs[0]["passes"] == {"precision": "bf16", "channels_last": True, "compile": False}
    assert main(["attack", str(folder / "im0.png"), "--model", tiny_registered, "--size", "model", "--steps", "12",
                 "--precision", "bf16", "--out", str(tmp_path / "a"), "--no-figures", "--quiet", "--json"]) in (0, 1)
    rows = json.loads((tmp_path / "a" / "results.json").read_text())
    assert rows[0]["status"] in ("fooled", "failed") and rows[0]["gradients"] <= 12


@pytest.mark.parametrize("victim", ["both", "pil+both"])
def test_fast_passes_at_native_size_attack_every_path_and_verify_in_fp32(tmp_path, tiny_registered, victim):
    model = advimage.models.get(tiny_registered)
    rng = np.random.default_rng(4)
    items = []
    for i in range(2):
        path = tmp_path / f"n{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(path))
    settings = Settings(steps=30, quantizers=("scaled",), victim=victim, channels_last=True)
    rows = run_batch(model, items, settings)
    plain = run_batch(model, items, Settings(steps=30, quantizers=("scaled",), victim=victim))
    # channels_last changes only the memory layout: the same verdicts as the plain passes
    assert [r.status for r in rows] == [r.status for r in plain]
    assert all(r.verified == (r.status == "fooled") for r in rows)
    assert any(r.status == "fooled" and set(r.verified_paths) >= {"float", "pil"} for r in rows)
