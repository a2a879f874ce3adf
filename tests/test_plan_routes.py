"""The ``--victim``, ``--downscaler`` and ``--ensemble`` spellings run through the pipelines code
(:class:`~advimage.pipelines.PipelineClassifier`, pipeline fronts, :meth:`Pipeline.model_input`):
rows bit-identical to the route they replaced (ResizedClassifier / MultiPathClassifier in front of
the model, torchvision's eval transforms in the verification, kept here as the reference), and
the settings hashes of stored runs unchanged."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from advimage import codec, engine, pipelines, verify
from advimage.bench.store import settings_hash
from advimage.data import ImageItem
from advimage.engine import Settings, run_batch
from advimage.models import ModelConfig, PixelClassifier
from advimage.models.protocol import MultiPathClassifier, ResizedClassifier, victim_method
from advimage.resize import DOWNSCALERS


# -- the replaced route, verbatim from the engine and verify.py before the merge --------------------
def _old_attacked_model(model, settings, fast=True):
    if fast:
        model = engine._with_passes(model, settings)
    if settings.size == "model" or settings.target_score is not None:
        return model
    crop = settings.crop_pct
    if settings.ensemble:
        return MultiPathClassifier(model, list(DOWNSCALERS), aggregation=settings.ensemble, crop_pct=crop)
    if settings.effective_victim == "both":
        return MultiPathClassifier(model, [victim_method(model.config, v) for v in ("pil", "float")], crop_pct=crop)
    victim = "pil" if settings.effective_victim == "pil+both" else settings.effective_victim
    return ResizedClassifier(model, victim_method(model.config, victim, settings.downscaler), crop_pct=crop)


def _old_quantizer_model(model, settings, attacked, fast=True):
    if settings.size == "native" and settings.effective_victim == "pil+both" and settings.target_score is None:
        if fast:
            model = engine._with_passes(model, settings)
        return MultiPathClassifier(model, [victim_method(model.config, v) for v in ("pil", "float")],
                                   crop_pct=settings.crop_pct)
    return attacked


def _old_model_inputs(file, config, paths):
    x = file.pixels
    out = {}
    for p in paths:
        if p == "float":
            out[p] = verify.eval_float(x.float(), config)
        elif p == "pil":
            out[p] = None if file.is_array else verify.eval_pil(file.pil, config)
        else:
            out.update(_NEW_MODEL_INPUTS(file, config, (p,)))
    return out


_NEW_MODEL_INPUTS = verify.model_inputs


# -- fixtures ----------------------------------------------------------------------------------------
class _ScaledConv(torch.nn.Module):
    """conftest's TinyConvNet on pixels, logits scaled so that small budgets fool it."""

    def __init__(self) -> None:
        super().__init__()
        from conftest import TinyConvNet
        self.net = TinyConvNet()

    def forward(self, x):
        return self.net(x * 127.5 + 127.5) * 50


def _model(kind: str) -> PixelClassifier:
    from conftest import _NormalizedLinear
    interp, net = ("bicubic", _ScaledConv()) if kind == "conv" else ("bilinear", _NormalizedLinear())
    config = ModelConfig(name=kind, input_size=32, crop_pct=0.875, interpolation=interp, mean=(0.5,) * 3,
                         std=(0.5,) * 3, num_classes=10)
    return PixelClassifier(net, config, [f"c{i}" for i in range(10)])


def _photo(h: int, w: int, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    base = g.uniform(40, 215, (3, 1 + h // 8, 1 + w // 8))
    x = np.kron(base, np.ones((8, 8)))[:, :h, :w] + g.normal(0, 12, (3, h, w))
    return torch.from_numpy(np.clip(x, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    out = []
    for i, hw in enumerate([(45, 60), (50, 44), (45, 60)]):
        path = root / f"p{i}.png"
        path.write_bytes(codec.encode_png(_photo(*hw, seed=10 + i)))
        out.append(ImageItem(path, None))
    return out


def _comparable(rows):
    return [({k: v for k, v in r.to_dict().items() if k != "seconds"}, r.data) for r in rows]


SPELLINGS = {
    "pil+both": dict(steps=30),
    "pil": dict(steps=30, victim="pil"),
    "float": dict(steps=30, victim="float"),
    "both": dict(steps=30, victim="both"),
    "both, two quantizers": dict(steps=20, victim="both", quantizers=("scaled", "smart")),
    "pil+both, .npy / round / jpeg": dict(steps=20, quantizers=("none", "round", "jpeg")),
    "downscaler bilinear": dict(steps=30, downscaler="bilinear"),
    "downscaler bilg, crop 1": dict(steps=30, downscaler="bilg", crop_pct=1.0),
    "downscaler pil-bicubic": dict(steps=30, downscaler="pil-bicubic"),
    "ensemble avg": dict(steps=30, ensemble="avg", crop_pct=1.0),
    "ensemble worst": dict(steps=30, ensemble="worst"),
    "ensemble max, lattice": dict(steps=50, ensemble="max", quantizers=("lattice", "none")),
    "surfree": dict(attack="surfree", steps=150),
    "ddn": dict(attack="ddn", steps=30),
    "channels_last": dict(steps=20, victim="both", channels_last=True),
    "targeted, margin 0": dict(steps=30, margin=0.0, target=3),
}


@pytest.mark.parametrize("kind", ["lin", "conv"])
@pytest.mark.parametrize("name", list(SPELLINGS))
def test_old_spellings_through_pipelines_give_identical_rows(name, kind, items, monkeypatch):
    model = _model(kind)
    settings = Settings(seed=1, **SPELLINGS[name])
    new = run_batch(model, items, settings)
    a = engine.attacked_model(model, settings)
    assert not isinstance(a, (MultiPathClassifier, ResizedClassifier))  # the pipelines route ran
    with monkeypatch.context() as m:
        m.setattr(engine, "attacked_model", _old_attacked_model)
        m.setattr(engine, "quantizer_model", _old_quantizer_model)
        m.setattr(verify, "model_inputs", _old_model_inputs)
        old = run_batch(model, items, settings)
    assert _comparable(new) == _comparable(old)
    if kind == "lin":  # the comparison covers written files, not only failures
        assert any(r.status == "fooled" for r in new)


# -- the verification's victim paths are the pipelines pil-<f> and torch-<f> -------------------------
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
@pytest.mark.parametrize("hw, crop_pct", [((45, 60), 0.875), ((50, 44), 1.0), ((36, 36), 0.875), ((20, 31), 0.9),
                                          ((33, 32), 1.0)])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".npy"])
def test_victim_paths_equal_their_pipelines(interp, hw, crop_pct, suffix):
    config = SimpleNamespace(input_size=32, crop_pct=crop_pct, interpolation=interp)
    x = _photo(*hw, seed=3)
    if suffix == ".png":
        data = codec.encode_png(x)
    elif suffix == ".jpg":
        buf = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
    else:
        buf = io.BytesIO()
        np.save(buf, x.float().numpy() + 0.3)
        data = buf.getvalue()
    new = verify.model_inputs(codec.decode_file(data, suffix), config, ("float", "pil"))
    old = _old_model_inputs(codec.decode_file(data, suffix), config, ("float", "pil"))
    assert torch.equal(new["float"], old["float"])
    assert (new["pil"] is None) == (old["pil"] is None) == (suffix == ".npy")
    if new["pil"] is not None:
        assert torch.equal(new["pil"], old["pil"])


def test_nearest_interpolation_keeps_torchvisions_transform():
    """The pipelines have no nearest filter: a model that resizes with it is verified as before."""
    config = SimpleNamespace(input_size=32, crop_pct=0.875, interpolation="nearest")
    assert verify.victim_pipeline("pil", config) is None
    data = codec.encode_png(_photo(45, 60, seed=4))
    new = verify.model_inputs(codec.decode_file(data, ".png"), config, ("float", "pil"))
    old = _old_model_inputs(codec.decode_file(data, ".png"), config, ("float", "pil"))
    assert all(torch.equal(new[p], old[p]) for p in ("float", "pil"))
    assert verify.victim_pipeline("float", SimpleNamespace(interpolation="bilinear")) == "torch-bilinear"
    assert pipelines.parse(verify.victim_pipeline("pil", SimpleNamespace(interpolation="bicubic"))).library == "pil"


# -- stored runs keep their settings hash ------------------------------------------------------------
# computed with the engine before the plan (commit 80fd98f): a store's rows are found by these
@pytest.mark.parametrize("kw, expected", [
    ({}, '8d938083d3357f2b'),
    ({'victim': 'pil'}, 'f6aed46ca26acd91'),
    ({'victim': 'float'}, '50a17336f87bac72'),
    ({'victim': 'both'}, '9e2031d8b6e08efb'),
    ({'downscaler': 'bilg'}, 'd71b2087e4266b4e'),
    ({'downscaler': 'pil-bicubic', 'victim': 'pil'}, 'a21ba3e45017f497'),
    ({'ensemble': 'avg', 'crop_pct': 1.0}, '9e73fde166e3d7ca'),
    ({'ensemble': 'max'}, '767591813e1244a6'),
    ({'size': 'model', 'steps': 50}, '43269032ff486698'),
    ({'attack': 'surfree', 'steps': 1000}, '4ff50e12d11a6724'),
    ({'attack': 'surfree', 'steps': 1000, 'victim': 'pil'}, '7d383aac6dc85ca3'),
    # victims='common' now defaults to the cubic JPEG backward: the runs made before keep theirs, spelt out
    ({'victims': 'common', 'jpeg_backward': 'identity'}, 'e456ef2b020fa716'),
    ({'victims': 'pair', 'aggregation': 'avg', 'share': 0.0}, '2d6bde184dfa3062'),
    ({'precision': 'bf16'}, 'e95df0553af00e0f'),
    ({'attack': 'pgd', 'target_score': 30.0}, 'c56b98de60803695'),
    ({'steps': 30, 'quantizers': ('smart', 'jpeg'), 'df': 2, 'quality': 80, 'target': 5}, 'b6ebbe6343256211'),
])
def test_settings_hashes_of_stored_runs_unchanged(kw, expected):
    assert settings_hash(Settings(**kw).identity()) == expected


@pytest.mark.parametrize("hw", [(60, 60), (45, 60), (32, 32), (20, 24)])
def test_scaling_member_panel_through_pipelines_equals_resized_classifiers(hw):
    """The Ch. 9 experiments' per-downscaler classifiers: pipeline fronts, the logits of the
    ResizedClassifier they replaced, bit for bit."""
    from advimage.experiments.scaling import MemberPanel

    model = _model("conv")
    panel = MemberPanel(model)
    x = torch.stack([_photo(*hw, seed=s).float() for s in range(3)])
    with torch.no_grad():
        for m in DOWNSCALERS:
            assert torch.equal(panel.members[m](x), ResizedClassifier(model, m, crop_pct=1.0)(x)), m
