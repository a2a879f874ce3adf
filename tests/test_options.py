"""No option is silently dropped: each one is used, or refused before any work (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advimage import quantize as Q
from advimage.cli import main
from advimage.engine import Settings
from advimage.quantize.base import QuantizedImages, QuantizerOptionError, register


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantizers=("scaled",), df=2), "df applies to"),
    (dict(quantizers=("lattice-int",), df=0), "df applies to"),
    (dict(quantizers=("auto",), steps=100, df=2), "df applies to"),  # auto = lattice-int at 100 gradients
    (dict(quantizers=("smart",), quality=80), "quality applies to"),
    (dict(quantizers=("round", "scaled"), quality=80), "quality applies to"),
    (dict(attack="surfree", quantizers=("jpeg",)), "need gradients"),
    (dict(attack="hsj", quantizers=("smart",)), "need gradients"),
    (dict(attack="ddn", victim="both"), "use victim 'pil\\+both'"),
    (dict(attack="surfree", victim="both", quantizers=("scaled",)), "use victim 'pil\\+both'"),
    (dict(victim="float", downscaler="bicubic"), "does not apply with a downscaler"),
    (dict(victim="both", ensemble="all"), "does not apply with a downscaler"),
])
def test_settings_refuse_options_they_would_ignore(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Settings(**kwargs)


def test_options_reach_the_quantizers_that_take_them():
    s = Settings(quantizers=("smart", "jpeg", "scaled"), df=2, quality=75)
    assert s.quantizer_options("smart", targeted=True) == dict(targeted=True, steps=10, df=2.0)
    assert s.quantizer_options("jpeg") == dict(targeted=False, steps=10, df=2.0, quality=75)
    assert s.quantizer_options("scaled") == dict(targeted=False, steps=10)
    assert Settings(quantizers=("round",)).quantizer_options("round") == dict(targeted=False)


@pytest.mark.parametrize("name", ["hill", "mipod", "gina", "scaled", "lattice", "round"])
def test_a_cost_map_is_refused_by_quantizers_that_make_their_own_or_none(name, multiclass_problem):
    model, x, y = multiclass_problem
    with pytest.raises(QuantizerOptionError, match="takes no option cost"):
        Q.run(name, model, x[:1], x[:1] + 0.3, y[:1], cost=torch.ones_like(x[:1]))


def test_smart_uses_a_cost_map(multiclass_problem):
    """A cost map changes smart's files (it is an option it takes, not a no-op)."""
    model, x, y = multiclass_problem
    from advimage.attacks import spec as attack_spec

    res = attack_spec("bp").run(model, x, y, steps=20)
    plain = Q.run("smart", model, x, res.x_adv, y)
    cost = torch.ones_like(x)
    cost[..., :8] = 100.0  # the left half is expensive
    weighted = Q.run("smart", model, x, res.x_adv, y, cost=cost)
    assert not torch.equal(plain.pixels, weighted.pixels)


def test_a_catch_all_quantizer_signature_is_refused_at_registration():
    def sloppy(model, x0, x_adv, y, **_) -> QuantizedImages:
        raise AssertionError("never run")

    with pytest.raises(TypeError, match="instead of \\*\\*kwargs"):
        register("test-sloppy", suffix=".png", gradients=0, description="test")(sloppy)
    assert "test-sloppy" not in Q.names()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("argv, match", [
    (["--quantize", "scaled", "--df", "2"], "df applies to"),
    (["--quantize", "smart", "--quality", "80"], "quality applies to"),
    (["--attack", "surfree", "--quantize", "jpeg"], "need gradients"),
    (["--attack", "ddn", "--victim", "both"], "use victim 'pil\\+both'"),
])
def test_attack_cli_refuses_ignored_options_before_work(argv, match, photo, tmp_path, tiny_registered, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(photo), "--model", tiny_registered, "--out", str(out), "--quiet", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    import re
    assert re.search(match, err)
    assert not any(out.glob("*.png")) if out.exists() else True


@pytest.mark.parametrize("argv, match", [
    (["--quantize", "lattice", "--df", "2"], "--df applies to"),
    (["--quality", "80"], "--quality applies to"),
    (["--attacks", "surfree:50", "--victim", "both", "--size", "native"], "use victim 'pil\\+both'"),
])
def test_bench_cli_refuses_ignored_options_before_work(argv, match, photo, tmp_path, tiny_registered, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(photo.parent), "--models", tiny_registered, "--out", str(out), "--quiet", *argv])
    assert exc.value.code == 2
    import re
    assert re.search(match, capsys.readouterr().err)
    from advimage.bench.store import DB_NAME
    assert not (out / DB_NAME).exists()


def test_bench_black_box_jobs_take_a_gradient_free_quantizer():
    from advimage.bench.runner import black_box_quantizer, make_jobs

    assert black_box_quantizer("smart") == "auto" and black_box_quantizer("jpeg") == "jpeg-pixels"
    assert black_box_quantizer("round") == "round"
    jobs = make_jobs(["m"], ["bp", "surfree"], steps=100, queries=200, df=2, quality=80, seed=0, quantizer="jpeg")
    assert [j.quantizer for j in jobs] == ["jpeg", "jpeg-pixels"]
    assert jobs[0].engine.df == 2 and jobs[0].engine.quality == 80
    assert jobs[1].engine.df is None and jobs[1].engine.quality == 80
