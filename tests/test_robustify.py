"""Thesis Appendix B: distances, online attack, training step, checkpoints, loading, CLI errors."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from advimage.models import ModelConfig, PixelClassifier, load_state_dict
from advimage.robustify import (
    Robustifier,
    RobustifyError,
    Settings,
    cc,
    find_head,
    get_distance,
    mse,
    msle,
    pairing_attack,
    train,
)
from advimage.robustify.train import CHECKPOINT, STUDENT, load_checkpoint


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(h)


def tiny(seed: int = 0) -> PixelClassifier:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return PixelClassifier(net, ModelConfig(name="tiny", input_size=16, num_classes=3)).eval()


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(20, 236, (n, 3, 16, 16), generator=g).float()


# --- distances (eqs. 9.8-9.11) ------------------------------------------------------------------

G1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
G2 = torch.tensor([[1.0, 0.0], [0.0, 4.0]])


def test_distances_hand_computed():
    assert float(mse(G1, G2)) == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert float(msle(G1, G2)) == pytest.approx((math.log(3) ** 2 + math.log(4) ** 2) / 4, rel=1e-6)
    # cos² of row 1: 1/5; of row 2: (16 / (5 * 4))² = 0.64
    assert float(cc(G1, G2)) == pytest.approx(((1 - 0.2) + (1 - 0.64)) / 2, rel=1e-6)


@pytest.mark.parametrize("name", ["mse", "msle", "cc"])
def test_distances_zero_at_equality_and_positive(name):
    d = get_distance(name)
    g = torch.rand(5, 7) * 3
    assert float(d(g, g)) == pytest.approx(0.0, abs=1e-7)
    assert float(d(g, g.flip(0))) > 0


def test_cc_is_scale_invariant_and_mse_is_not():
    g1, g2 = torch.rand(4, 9), torch.rand(4, 9)
    assert float(cc(2.5 * g1, 0.1 * g2)) == pytest.approx(float(cc(g1, g2)), rel=1e-5)
    assert float(cc(g1, -3 * g1)) == pytest.approx(0.0, abs=1e-6)
    assert float(mse(2 * g1, g2)) != pytest.approx(float(mse(g1, g2)))


def test_distance_errors():
    with pytest.raises(ValueError, match="valid: mse, msle, cc"):
        get_distance("l1")
    with pytest.raises(ValueError, match="> -1"):
        msle(torch.full((1, 2), -1.5), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="differ in shape"):
        mse(torch.zeros(2, 3), torch.zeros(2, 4))


# --- online attack (eqs. 9.6-9.7) ---------------------------------------------------------------

def test_pairing_attack_distortion_and_margin():
    model, x = tiny(), images()
    for eps, iters in ((1.0, 1), (2.0, 3)):
        res = pairing_attack(model, x, eps=eps, iters=iters)
        d = (res.x_adv - x).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())
        assert torch.all(d <= eps + 1e-4)
        if iters == 1:  # no clipping at these pixel values: exactly ε
            assert torch.allclose(d, torch.full_like(d, eps), atol=1e-4)
        rows = torch.arange(len(x))
        with torch.no_grad():
            m0 = model(x)[rows, res.label] - model(x)[rows, res.second]
            ma = model(res.x_adv)[rows, res.label] - model(res.x_adv)[rows, res.second]
        assert torch.all(ma < m0)  # the pseudo-label's margin shrinks
        assert torch.equal(res.label, model(x).argmax(1))  # pseudo-labels: the model's own prediction
    assert all(p.grad is None for p in model.parameters())


# --- training -----------------------------------------------------------------------------------

def test_student_starts_equal_and_step_decreases_loss():
    s = Settings(model="tiny", eps=4.0, lr=1e-3, batch_size=8, bn_stats="frozen")
    rob, x = Robustifier(tiny(), s), images()
    x_adv = rob.adversarial(x)
    nat0, rob0 = (float(v.detach()) for v in rob.losses(x, x_adv))
    assert nat0 == 0.0 and rob0 > 0  # the student starts as the teacher
    first = rob.step(x)  # attacks the same student: the same x_adv
    assert first.total == pytest.approx(nat0 + rob0)
    nat, robl = (float(v.detach()) for v in rob.losses(x, x_adv))
    assert nat + robl < nat0 + rob0


@pytest.mark.parametrize("bn_stats", ["frozen", "update"])
def test_only_the_feature_extractor_changes(bn_stats):
    teacher = tiny()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    rob = Robustifier(teacher, Settings(model="tiny", eps=2.0, lr=1e-2, bn_stats=bn_stats))
    rob.step(images())
    after_t = teacher.state_dict()
    assert all(torch.equal(before[k], after_t[k]) for k in before)  # the teacher is frozen
    st = rob.student.state_dict()
    for k in ("net.fc.weight", "net.fc.bias", "mean", "std"):  # head and preprocessing shared, frozen
        assert torch.equal(st[k], before[k])
    for k in ("net.conv.weight", "net.conv.bias", "net.bn.weight", "net.bn.bias"):
        assert not torch.equal(st[k], before[k])
    stats_moved = not torch.equal(st["net.bn.running_mean"], before["net.bn.running_mean"])
    assert stats_moved == (bn_stats == "update")
    assert not rob.student.training  # back in eval mode after a step
    assert [n for n, _ in rob.params] == ["net.conv.weight", "net.conv.bias", "net.bn.weight", "net.bn.bias"]


def test_checkpoint_resume_is_identical(tmp_path):
    x = images(10)
    s2 = Settings(model="tiny", eps=2.0, lr=1e-2, batch_size=4, epochs=2, data="10:x")
    full = train(tiny(), x, tmp_path / "a", s2, progress=False)
    half = train(tiny(), x, tmp_path / "b", Settings(**{**s2.to_dict(), "epochs": 1}), progress=False)
    assert (full.epochs, full.steps, half.epochs, half.steps) == (2, 6, 1, 3)
    resumed = train(tiny(), x, tmp_path / "b", s2, resume=True, progress=False)
    assert (resumed.epochs, resumed.steps) == (2, 6)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(resumed.history, full.history):
        assert (a["l_nat"], a["l_rob"]) == (b["l_nat"], b["l_rob"])
    a, b = load_state_dict(tmp_path / "a" / STUDENT), load_state_dict(tmp_path / "b" / STUDENT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = Robustifier(tiny(), s2), Robustifier(tiny(), s2)
    load_checkpoint(ra, tmp_path / "a")
    load_checkpoint(rb, tmp_path / "b")
    oa, ob = ra.optimizer_tensors()[0], rb.optimizer_tensors()[0]
    assert oa.keys() == ob.keys() and oa and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert ra.step_count == 6


def test_resume_refuses_other_settings_and_existing_runs(tmp_path):
    x = images(4)
    s = Settings(model="tiny", batch_size=4, epochs=1)
    train(tiny(), x, tmp_path, s, progress=False)
    with pytest.raises(RobustifyError, match="already holds a run"):
        train(tiny(), x, tmp_path, s, progress=False)
    with pytest.raises(RobustifyError, match=r"eps 1.0 \(now 2.0\)"):
        train(tiny(), x, tmp_path, Settings(**{**s.to_dict(), "eps": 2.0}), resume=True, progress=False)
    with pytest.raises(RobustifyError, match="no checkpoint"):
        train(tiny(), x, tmp_path / "empty", s, resume=True, progress=False)


def test_student_loads_by_path_without_pickle(tmp_path, monkeypatch):
    from advimage.models import register
    from advimage.models.registry import MODELS
    from advimage.specs import load_classifier

    def build(weights=None):
        m = tiny(seed=5)
        if weights is not None:
            m.net.load_state_dict(load_state_dict(weights))
        return m

    register("tiny-robustify-test")(build)
    try:
        x = images(4)
        train(tiny(seed=5), x, tmp_path, Settings(model="tiny-robustify-test", eps=2.0, lr=1e-2, batch_size=4,
                                                  epochs=1), progress=False)
        assert (tmp_path / STUDENT).read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle

        def no_pickle(*a, **k):
            raise AssertionError("pickle used")
        monkeypatch.setattr(torch, "load", no_pickle)
        monkeypatch.setattr(pickle, "load", no_pickle)
        monkeypatch.setattr(pickle, "loads", no_pickle)
        student = load_classifier(f"tiny-robustify-test@{tmp_path / STUDENT}", device="cpu")
        saved = load_state_dict(tmp_path / STUDENT)
        assert all(torch.equal(student.net.state_dict()[k], saved[k]) for k in saved)
        assert not torch.equal(student.net.conv.weight, tiny(seed=5).net.conv.weight)
        rob = Robustifier(tiny(seed=5), Settings(model="tiny-robustify-test", eps=2.0, lr=1e-2, batch_size=4,
                                                 epochs=1))
        load_checkpoint(rob, tmp_path)  # the checkpoint, too, without pickle
        assert torch.equal(rob.student.net.conv.weight, student.net.conv.weight)
    finally:
        MODELS.unregister("tiny-robustify-test")


def test_missing_spec_weights_and_headless_model(tmp_path):
    from advimage.models import WeightsError
    from advimage.specs import check

    with pytest.raises(WeightsError, match="not found"):
        check(f"efficientnet_lite0@{tmp_path / 'nope.safetensors'}")
    with pytest.raises(RobustifyError, match="fully connected"):
        find_head(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_settings_validation():
    for bad in ({"eps": -1.0}, {"iters": 0}, {"lr": 0.0}, {"bn_stats": "x"}, {"epochs": 0}):
        with pytest.raises((RobustifyError, ValueError)):
            Settings(**bad)


# --- CLI error paths ----------------------------------------------------------------------------

def _cli_error(argv, capsys) -> str:
    from advimage.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    imgs = str(tmp_path)
    assert "unknown model 'nope'" in _cli_error(["robustify", "nope", imgs, "--out", str(tmp_path / "o")], capsys)
    assert "invalid choice" in _cli_error(["robustify", "efficientnet_lite0", imgs, "--out", str(tmp_path / "o"),
                                           "--distance", "l1"], capsys)
    assert "defenses cannot be trained" in _cli_error(
        ["robustify", "efficientnet_lite0+jpeg:75", imgs, "--out", str(tmp_path / "o")], capsys)
    assert "no checkpoint" in _cli_error(["robustify", "efficientnet_lite0", imgs, "--out", str(tmp_path / "o"),
                                          "--resume", "--device", "cpu"], capsys)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT).write_bytes(b"")
    assert "--resume" in _cli_error(["robustify", "efficientnet_lite0", imgs, "--out", str(tmp_path / "run"),
                                     "--device", "cpu"], capsys)
    (tmp_path / "empty").mkdir()
    assert "no images found" in _cli_error(["robustify", "efficientnet_lite0", str(tmp_path / "empty"), "--out",
                                            str(tmp_path / "o2"), "--device", "cpu"], capsys)
    assert "--out" in _cli_error(["robustify", "efficientnet_lite0", imgs], capsys)


# --- evaluation outputs (advimage experiment app-b) ---------------------------------------------

def test_app_b_outputs(tmp_path):
    from advimage.experiments.app_b import student_info, write_outputs

    rows = [{"model": "teacher", "distance": "", "eps": 0.0, "iters": "", "epochs": "", "train_images": "",
             "n_images": 40, "accuracy": 0.75, "d_half_fit": 0.3, "d_half_empirical": 0.28, "r2": 0.9,
             "d_half_ratio": 1.0, "accuracy_change": 0.0},
            {"model": "runs/x/student.safetensors", "distance": "mse", "eps": 1.0, "iters": 1, "epochs": 3,
             "train_images": 300, "n_images": 40, "accuracy": 0.7, "d_half_fit": 0.45, "d_half_empirical": 0.4,
             "r2": 0.8, "d_half_ratio": 1.5, "accuracy_change": -0.05}]
    write_outputs(rows, tmp_path, "t")
    md = (tmp_path / "app_b.md").read_text()
    assert "| 1.50 | -5.0 pts |" in md and "teacher" in md
    assert (tmp_path / "app_b.csv").read_text().count("\n") == 3
    assert (tmp_path / "app_b.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="student.json"):
        student_info(tmp_path)


def test_app_b_from_bench_folders(tmp_path):
    import json

    from advimage.experiments.app_b import from_bench

    run = tmp_path / "rob"
    run.mkdir()
    (run / "student.json").write_text(json.dumps({"settings": {"distance": "cc", "eps": 2.0, "iters": 1,
                                                               "data": "300:abc"}, "epoch": 2}))
    student = f"m@{run / 'student.safetensors'}"

    def summary(model, acc, dh):
        return {"model": model, "attack": "bp", "n_images": 40, "accuracy": acc, "d_half_fit": dh,
                "d_half_empirical": dh, "r2": 0.9}
    for name, s in (("t", summary("m", 0.8, 0.2)), ("s", summary(student, 0.75, 0.3))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"summaries": [s]}))
    rows = from_bench([str(tmp_path / "t"), str(tmp_path / "s")], tmp_path / "out", model="m")
    assert [r["model"] for r in rows] == ["teacher", str(run / "student.safetensors")]
    assert rows[1]["d_half_ratio"] == pytest.approx(1.5) and rows[1]["accuracy_change"] == pytest.approx(-0.05)
    assert (rows[1]["distance"], rows[1]["eps"], rows[1]["epochs"], rows[1]["train_images"]) == ("cc", 2.0, 2, 300)
    with pytest.raises(ValueError, match="teacher"):
        from_bench([str(tmp_path / "s")], tmp_path / "out", model="m")


def test_app_b_cli_needs_images(capsys):
    assert "held-out images" in _cli_error(["experiment", "app-b"], capsys)
