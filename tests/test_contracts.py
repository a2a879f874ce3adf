"""The seams: a quantizer added in one file plus registration runs through the engine, the
attack registry declares what it needs, the public API is pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import advimage
from advimage import quantize
from advimage.data import ImageItem
from advimage.engine import Row, Settings, run_batch
from advimage.oracle import LossOracle


def test_public_api_is_pinned():
    assert sorted(advimage.__all__) == sorted([
        "AttackResult", "Criterion", "ImageItem", "ImageReadError", "Misclassification", "ModelConfig",
        "PixelClassifier", "QuantizedImages", "Row", "ScoreBelow", "Settings", "TargetedMisclassification", "attack",
        "attack_files", "attack_names", "discover", "distortion", "load_for_model", "load_model", "load_regressor",
        "model_names",
        "psnr", "quantize", "quantize_jpeg", "quantize_spatial", "read_image", "round_pixels", "run_batch",
        "write_png", "__version__"])
    import types
    assert isinstance(advimage.quantize, types.ModuleType)  # the package is not shadowed by a function
    assert set(quantize.names()) >= {"smart", "round", "none", "jpeg"}


def _toy_quantizer(model, x0, x_adv, y, *, targeted=False):
    """Toy: move every pixel a whole level towards the attack's output (ceil/floor away from x0)."""
    u = x_adv - x0.float()
    xq = (x0.float() + torch.sign(u) * torch.ceil(u.abs())).clamp(0, 255)
    oracle = LossOracle(model, y, targeted, max_gradients=0, max_forwards=1)
    ok = oracle.success(oracle.logits(xq))
    return quantize.QuantizedImages(pixels=xq.to(torch.uint8), success=ok, distortion=advimage.distortion(xq, x0),
                                    lam=torch.zeros(len(xq)), gradients=oracle.gradients, forwards=oracle.forwards,
                                    suffix=".png")


def test_a_toy_quantizer_plugs_into_the_engine(tmp_path, tiny_registered):
    quantize.register("toy-ceil", suffix=".png", gradients=0, forwards=1,
                      description="test: whole levels away from x0")(_toy_quantizer)
    try:
        g = np.random.default_rng(3)
        path = tmp_path / "a.png"
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        model = advimage.models.get(tiny_registered)
        rows = run_batch(model, [ImageItem(path)], Settings(steps=20, quantizers=("toy-ceil", "smart"), size="model"))
        assert [r.quantizer for r in rows] == ["toy-ceil", "smart"]
        toy = rows[0]
        assert toy.status in ("fooled", "failed") and toy.data.startswith(b"\x89PNG")
        assert toy.gradients <= 20 and Settings(steps=20, quantizers=("toy-ceil",)).attack_steps == 20
        # the engine verified the decoded file itself
        x = advimage.codec.decode(toy.data).float()[None]
        assert (model(x).argmax(1) != toy.label).item() == toy.verified
    finally:
        quantize.base.QUANTIZERS.unregister("toy-ceil")


def test_engine_refuses_bad_settings_with_the_valid_names():
    with pytest.raises(KeyError, match="valid quantizers"):
        Settings(quantizers=("nope",))
    with pytest.raises(KeyError, match="valid attacks"):
        Settings(attack="nope")
    with pytest.raises(TypeError, match="no parameter"):
        Settings(attack="bp", attack_params={"nope": 1})
    with pytest.raises(ValueError, match="quantizer's 1 gradient"):
        Settings(steps=1, quantizers=("smart",))


def test_attack_registry_declares_box_budget_and_settings():
    from advimage.attacks import spec

    assert spec("surfree").black_box and spec("surfree").budget == "queries" and spec("surfree").seeded
    assert not spec("bp").black_box and spec("bp").budget == "gradients"
    assert spec("bp").settings(gamma_min=0.5) == {"gamma_min": 0.5, "kappa": 0.2}
    # the effective hyperparameters identify stored rows
    a = Settings(attack="bp").identity()
    b = Settings(attack="bp", attack_params={"gamma_min": 0.5}).identity()
    assert a != b and a["attack_params"]["gamma_min"] == 0.7


def test_budget_covers_the_quantizer(multiclass_problem):
    model, x, y = multiclass_problem
    s = Settings(steps=12, quantizers=("smart",), size="model")
    assert s.attack_steps == 11  # BP gets steps - 1, the quantizer its one gradient


def test_quantize_does_not_import_attacks():
    import ast
    import pathlib

    for f in pathlib.Path(quantize.__file__).parent.glob("*.py"):
        tree = ast.parse(f.read_text())
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not any(m.startswith("attacks") or ".attacks" in m for m in mods), f


def test_cost_map_of_ones_equals_squared_l2(multiclass_problem):
    model, x, y = multiclass_problem
    res = advimage.attack(model, x, y, attack="bp", steps=20)
    a = quantize.quantize_spatial(model, x, res.x_adv, y)
    b = quantize.quantize_spatial(model, x, res.x_adv, y, cost=torch.ones_like(x))
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.success, b.success)
    with pytest.raises(ValueError, match="> 0"):
        quantize.quantize_spatial(model, x, res.x_adv, y, cost=torch.zeros_like(x))


def test_rows_are_json_ready():
    r = Row(file="f", key="k", psnr=float("inf"), distortion=0.0, data=b"x")
    d = r.to_dict()
    assert d["psnr"] is None and "data" not in d


def test_quant_table_runs_on_unlabelled_files(tmp_path, tiny_registered):
    from advimage.experiments import quantization_table

    g = np.random.default_rng(4)
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(g.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(folder / f"u{i}.png")
    s = quantization_table.run([str(folder)], tmp_path / "out", tiny_registered, steps=12, limit=None,
                               progress=False)
    assert s["images"] == 3 and s["n_correct"] == 3  # labelled by the model
    assert s["smart_success"] == 1.0 and s["round_success"] <= s["smart_success"]
    assert (tmp_path / "out" / "table.md").read_text().count("|") > 10


def test_all_paths_criterion_needs_every_path():
    from advimage.criteria import AllPaths, Misclassification

    crit = AllPaths(Misclassification(torch.tensor([0, 1])))
    # image 0: path 0 fooled (argmax 1), path 1 not; image 1: both paths fooled (argmax 0)
    logits = torch.tensor([[[0.0, 2.0], [3.0, 1.0]], [[2.0, 0.0], [5.0, 1.0]]])
    assert crit.success(logits).tolist() == [False, True]
    # loss = worst path's margin: image 0 -> max(0 - 2, 3 - 1) = 2; image 1 -> max(0 - 2, 1 - 5) = -2
    assert crit.loss(logits).tolist() == [2.0, -2.0]
    assert crit.subset(torch.tensor([1])).success(logits[1:]).tolist() == [True]


def test_victim_both_runs_two_paths_and_label_attacks_are_refused_it(tiny_registered):
    from advimage.engine import attacked_model
    from advimage.pipelines import PipelineClassifier

    model = advimage.models.get(tiny_registered)
    both = attacked_model(model, Settings(victim="both"))
    assert isinstance(both, PipelineClassifier) and both.specs == ["pil-bilinear", "torch-bilinear"]
    assert not both.one_member_max  # one backward through both paths, as before the pipelines route
    x = torch.randint(0, 256, (2, 3, 40, 48)).float()
    out = both(x)
    assert out.shape == (2, 2, 10)
    assert torch.allclose(out[:, 1], model(torch.nn.functional.interpolate(x, size=(32, 38), mode="bilinear",
                                                                           antialias=True)[..., 3:35]), atol=1e-3)
    # label-only attacks cannot take the worst-path loss: refused, naming the victim that works
    with pytest.raises(ValueError, match="use victim 'pil\\+both'"):
        Settings(attack="ddn", victim="both")
    assert Settings(attack="bp", victim="both").effective_victim == "both"
    assert Settings().effective_victim == "pil+both"  # the default
    assert Settings(attack="surfree").identity()["victim"] == "pil+both"
    from advimage.engine import quantizer_model
    s = Settings(victim="pil+both")
    a = attacked_model(model, s)
    assert a(x).shape == (2, 10) and a.front.pipeline.spec == "pil-bilinear"  # the attack through PIL alone
    q = quantizer_model(model, s, a)
    assert isinstance(q, PipelineClassifier) and q.specs == ["pil-bilinear", "torch-bilinear"]


def test_every_classifier_kind_implements_the_protocol(tiny_registered):
    from advimage.defenses import create
    from advimage.models.protocol import Classifier, MultiPathClassifier, ResizedClassifier

    model = advimage.models.get(tiny_registered)
    kinds = [model, create("jpeg", model, quality=90), ResizedClassifier(model, "pil-bilinear"),
             MultiPathClassifier(model, ["pil-bilinear", "torch-bilinear"])]
    for k in kinds:
        assert isinstance(k, Classifier), type(k).__name__
        assert k.config.name == "tiny-test" and k.class_name(3) == "class3"
        assert k.predict(torch.full((2, 3, 32, 32), 128.0)).shape == (2,)


def test_model_specs_build_defended_classifiers(tiny_registered):
    from advimage.defenses.jpeg import JpegDefense
    from advimage.models import UnknownModelError
    from advimage.specs import load_classifier, parse

    assert parse("m+jpeg:75") == ("m", [("jpeg", "75")])
    m = load_classifier(f"{tiny_registered}+jpeg:75", device="cpu")
    assert isinstance(m, JpegDefense) and m.quality == 75
    with pytest.raises(UnknownModelError, match="registered models"):
        load_classifier("nope+jpeg:75")
    with pytest.raises(KeyError, match="valid defenses"):
        load_classifier(f"{tiny_registered}+nope")


def test_native_batches_group_sizes_and_rows_keep_the_input_order(tmp_path, tiny_registered):
    from advimage.engine import attack_files, plan_batches

    g = np.random.default_rng(8)
    items = []
    for i, shape in enumerate([(40, 48), (36, 36), (40, 48), (36, 36), (40, 48)]):
        p = tmp_path / f"f{i}.png"
        Image.fromarray(g.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(p)
        items.append(ImageItem(p))
    s = Settings(steps=10)
    assert plan_batches(items, 3, s) == [[1, 3, 0], [2, 4]]
    assert plan_batches(items, 3, Settings(steps=10, size="model")) == [[0, 1, 2], [3, 4]]
    rows = attack_files(advimage.models.get(tiny_registered), items, tmp_path / "out", s, batch_size=3,
                        progress=False, figures=False)
    assert [r.file for r in rows] == [str(it.path) for it in items]


def test_margin_makes_the_file_reach_the_margin(tmp_path, tiny_registered):
    from advimage.criteria import Margin, Misclassification

    g = np.random.default_rng(9)
    items = []
    for i in range(3):
        p = tmp_path / f"m{i}.png"
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        items.append(ImageItem(p))
    model = advimage.models.get(tiny_registered)
    plain = run_batch(model, items, Settings(steps=30, size="model"))
    kappa = 5.0
    robust = run_batch(model, items, Settings(steps=30, size="model", margin=kappa))
    for a, b in zip(plain, robust):
        assert b.status == "fooled"
        x = advimage.codec.decode(b.data).float()[None]
        loss = Misclassification(torch.tensor([b.label])).loss(model(x))
        assert float(loss) <= -kappa + 1e-4  # the file reaches the margin
        assert b.distortion >= a.distortion - 1e-6
    crit = Margin(Misclassification(torch.tensor([0])), 1.0)
    assert crit.success(torch.tensor([[0.0, 0.5]])).tolist() == [False]  # fooled, but by less than the margin
    assert crit.success(torch.tensor([[0.0, 1.5]])).tolist() == [True]
    with pytest.raises(ValueError, match="margin"):
        Settings(margin=-1)
