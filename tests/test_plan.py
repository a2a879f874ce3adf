"""The plan: settings checked and resolved once (attack, quantizers, the pipelines of the attack,
the quantizer and the verification, the budget split); the CLI refuses through the same checks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from advimage.engine import Settings
from advimage.plan import Plan, resolve
from advimage.quantize import spec as quantizer_spec
from advimage.resize import DOWNSCALERS

BICUBIC = SimpleNamespace(input_size=32, crop_pct=0.875, interpolation="bicubic")
BILINEAR = SimpleNamespace(input_size=32, crop_pct=0.875, interpolation="bilinear")


@pytest.mark.parametrize("kw, attack, quantizer, verify, main", [
    (dict(), ("pil",), ("pil", "float"), ("float", "pil"), "pil"),  # pil+both, the default
    (dict(victim="pil"), ("pil",), ("pil",), ("float", "pil"), "pil"),
    (dict(victim="float"), ("float",), ("float",), ("float", "pil"), "pil"),
    (dict(victim="both"), ("pil", "float"), ("pil", "float"), ("float", "pil"), "pil"),
    (dict(downscaler="bilg"), ("bilg",), ("bilg",), ("bilg",), "bilg"),
    (dict(downscaler="torch-bilinear", victim="pil"), ("torch-bilinear",), ("torch-bilinear",),
     ("torch-bilinear",), "torch-bilinear"),
    (dict(ensemble="worst"), DOWNSCALERS, DOWNSCALERS, DOWNSCALERS, DOWNSCALERS[0]),
    (dict(size="model"), (), (), ("model",), "model"),
    (dict(attack="pgd", target_score=30.0), (), (), ("file",), "file"),
    (dict(victims="pair"), ("pil-bicubic", "torch-bicubic"), ("pil-bicubic", "torch-bicubic"),
     ("pil-bicubic", "torch-bicubic"), "pil-bicubic"),
    (dict(attack="surfree", victims="pair"), ("pil-bicubic",), ("pil-bicubic", "torch-bicubic"),
     ("pil-bicubic", "torch-bicubic"), "pil-bicubic"),
])
def test_every_spelling_is_a_set_of_pipelines(kw, attack, quantizer, verify, main):
    plan = Settings(**kw).plan
    assert (plan.attack_paths, plan.quantizer_paths, plan.verify_paths, plan.main_path) == (
        attack, quantizer, verify, main)
    assert plan.query_paths == max(1, len(quantizer))
    assert plan.one_member_max == ("victims" in kw)


def test_victim_paths_become_the_models_own_resize():
    plan = Settings(victim="both").plan
    assert plan.specs(plan.attack_paths, BICUBIC) == ("pil-bicubic", "torch-bicubic")
    assert plan.specs(plan.attack_paths, BILINEAR) == ("pil-bilinear", "torch-bilinear")
    assert Plan.spec("cv2-area", BICUBIC) == "cv2-area"


def test_ensemble_and_victims_aggregations():
    plan = Settings(ensemble="avg").plan
    assert plan.aggregation == plan.quantizer_aggregation == "avg" and plan.share == 0.0
    plan = Settings(victims="common", aggregation="worst", share=0.2).plan
    assert (plan.aggregation, plan.quantizer_aggregation, plan.share) == ("worst", "max", 0.2)


@pytest.mark.parametrize("kw", [
    dict(), dict(steps=80), dict(steps=30, quantizers=("smart", "scaled")), dict(attack="surfree", steps=500),
    dict(attack="surfree", steps=500, ensemble=None, victims="common"), dict(attack="hsj", steps=300, size="model"),
])
def test_budget_split(kw):
    s = Settings(**kw)
    plan = s.plan
    black = plan.black_box
    grads = 0 if black else max(quantizer_spec(q).gradients for q in s.quantizers)
    forwards = max(quantizer_spec(q).max_forwards(s.quantizer_steps) for q in s.quantizers)
    assert plan.quantizer_gradients == grads
    assert plan.overhead_queries == plan.query_paths * (1 + forwards)
    assert plan.attack_steps == s.steps - (plan.overhead_queries if black else grads) >= 1
    # Settings' derived values are the plan's
    assert (s.attack_steps, s.quantizer_gradients, s.overhead_queries, s.query_paths, s.verification_paths) == (
        plan.attack_steps, plan.quantizer_gradients, plan.overhead_queries, plan.query_paths, plan.verify_paths)


def test_quantizer_options_and_attack_arguments():
    s = Settings(attack="pgd", steps=40, quantizers=("smart", "jpeg"), df=2, quality=75, target=3, seed=5)
    plan = s.plan
    assert plan.quantizer_options("jpeg") == s.quantizer_options("jpeg", True)
    assert plan.quantizer_options("smart")["df"] == 2.0 and plan.quantizer_options("jpeg")["quality"] == 75
    assert plan.targeted and plan.quantizer_options("smart").get("targeted", True)
    from advimage.attacks import spec as attack_spec
    assert ("seed" in plan.attack_kwargs) == attack_spec("pgd").seeded
    assert Settings(attack="surfree", steps=500, seed=4).plan.attack_kwargs["seed"] == 4  # seeded


def test_plan_is_frozen_and_resolved_once():
    s = Settings()
    assert s.plan is s.plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.plan.attack_steps = 1  # type: ignore[misc]
    assert resolve(s) == s.plan


@pytest.mark.parametrize("kw, message", [
    (dict(ensemble="avg", attack="surfree"), "gradient attack"),
    (dict(victim="both", attack="ddn"), "pil\\+both"),
    (dict(downscaler="nope"), "bilg"),
    (dict(quality=0, quantizers=("jpeg",)), "1..100"),
    (dict(steps=50, quantizers=("lattice-int",)), "exceed"),
    (dict(attack="surfree", steps=20), "queries of the originals"),
])
def test_refusals_live_in_the_resolution(kw, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kw)


@pytest.mark.parametrize("argv, message", [
    (["--ensemble", "avg", "--attack", "surfree"], "gradient attack"),
    (["--steps", "50", "--quantize", "lattice-int"], "exceed"),
    (["--attack", "surfree", "--steps", "20"], "queries of the originals"),
    (["--quantize", "jpeg", "--quality", "0"], "1..100"),
])
def test_cli_refuses_through_the_same_checks_before_work(argv, message, tmp_path, capsys):
    from advimage.cli import main

    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(tmp_path / "missing.png"), "--out", str(out), "--quiet", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message.replace("\\", "") in err and "no such file" not in err
    assert not out.exists()
