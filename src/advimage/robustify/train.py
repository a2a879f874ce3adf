"""Unsupervised feature-pairing robustification (thesis Appendix B, §9.7).

The classifier f = h∘g (g: everything up to the features fed to the last fully connected layer h).
A frozen teacher (the model as given) and a student initialised from it; the student's g (every
convolution and BatchNorm) is trained with Adam on

    L_tot = dist(g_s(x0), g_t(x0)) + dist(g_s(x_a), g_s(x0))      (L_nat + L_rob)

where x_a comes from :func:`~advimage.robustify.attack.pairing_attack` on the current student
(eqs. 9.6-9.7, pseudo-labels = the student's own prediction; no ground-truth label is read) and
dist is MSE, MSLE or CC (eqs. 9.8-9.11). h_s stays frozen (= h_t).

Choices where the thesis is silent: the attack runs with the student in eval mode (the model an
attacker faces); the loss forward runs x0 and x_a as one batch with BatchNorm in training mode
(``bn_stats="update"``, batch statistics, running statistics updated) or in eval mode
(``"frozen"``); dropout stays off (eval mode) so that g is the deterministic feature map.

Run folder (``out``): ``student.safetensors`` (the network's state dict, loadable as
``--weights`` of the model or as the spec ``MODEL@OUT/student.safetensors``) with
``student.json`` (settings, epoch, history) written after every epoch; ``checkpoint.safetensors``
+ ``checkpoint.json`` (student, Adam state, epoch, step) for :func:`train` with ``resume=True``.
Nothing is pickled: tensors go through safetensors, the rest through JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from . import distances
from .attack import pairing_attack

FORMAT = "advimage-robustify/1"
STUDENT = "student.safetensors"
CHECKPOINT = "checkpoint.safetensors"
BN_STATS = ("update", "frozen")


class RobustifyError(ValueError):
    """Bad settings, a model without a recognisable head, or a run folder that does not fit."""


@dataclass(frozen=True)
class Settings:
    """What a robustification run does (all of it but ``epochs`` must match on resume).

    model: the model's name (as given to :func:`advimage.models.load_model`); weights: its weight
    file, if not the default. distance: mse | msle | cc. eps: distortion bound of the online attack
    (eq. 6.2, pixel units, thesis default 1). iters: N_iter (default 1). lr: Adam's learning rate
    (thesis 1e-4). batch_size: images per step. epochs: passes over the images. seed: data order.
    size: training resolution (None: the model's input size). bn_stats: update | frozen.
    data: fingerprint of the training images (count and names), filled by the caller.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = None
    distance: str = "mse"
    eps: float = 1.0
    iters: int = 1
    lr: float = 1e-4
    batch_size: int = 32
    epochs: int = 3
    seed: int = 0
    size: int | None = None
    bn_stats: str = "update"
    data: str = ""

    def __post_init__(self) -> None:
        distances.get(self.distance)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise RobustifyError(f"eps must be a finite number >= 0, got {self.eps}")
        for name in ("iters", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise RobustifyError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RobustifyError(f"lr must be a positive number, got {self.lr}")
        if self.size is not None and self.size < 8:
            raise RobustifyError(f"size must be >= 8 pixels, got {self.size}")
        if self.bn_stats not in BN_STATS:
            raise RobustifyError(f"unknown bn_stats {self.bn_stats!r}; valid: {', '.join(BN_STATS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def comparable(self) -> dict[str, Any]:
        """What must equal between a run and its resumption."""
        d = self.to_dict()
        d.pop("epochs")
        return d


def data_fingerprint(names: Sequence[str]) -> str:
    """``"<count>:<sha256 of the names>"`` of the training images, in order."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return f"{len(names)}:{digest}"


def find_head(classifier: nn.Module) -> nn.Linear:
    """The last fully connected layer h of a classifier (PixelClassifier or a bare network):
    timm's ``get_classifier()``, else torchvision's ``fc`` / last Linear of ``classifier``."""
    net = getattr(classifier, "net", classifier)
    head = None
    if hasattr(net, "get_classifier"):
        head = net.get_classifier()
    elif isinstance(getattr(net, "fc", None), nn.Linear):
        head = net.fc
    elif isinstance(getattr(net, "classifier", None), nn.Module):
        linears = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if not isinstance(head, nn.Linear):
        raise RobustifyError(f"cannot find the final fully connected layer of {type(net).__name__} "
                             "(expected timm's get_classifier(), or an nn.Linear `fc` / `classifier`)")
    return head


@contextmanager
def capture_features(head: nn.Module) -> Iterator[list[Tensor]]:
    """Within the block, every forward through ``head`` appends its input (the features g(x)) to
    the yielded list; the hook is removed on exit."""
    store: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    try:
        yield store
    finally:
        handle.remove()


def features_and_logits(model: nn.Module, head: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(g(x) flattened to (N, n_f), f(x)) in one forward."""
    with capture_features(head) as store:
        logits = model(x)
    if len(store) != 1:
        raise RobustifyError(f"the head ran {len(store)} times in one forward; expected once")
    return store[0].flatten(1), logits


def trainable_parameters(student: nn.Module, head: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The student's parameters outside the head (g: convolutions, BatchNorm), in module order."""
    head_ids = {id(p) for p in head.parameters()}
    return [(n, p) for n, p in student.named_parameters() if id(p) not in head_ids]


def set_modes(student: nn.Module, bn_stats: str) -> None:
    """Eval mode everywhere (no dropout), BatchNorm in training mode when ``bn_stats == "update"``."""
    student.eval()
    if bn_stats == "update":
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()


@dataclass
class StepLosses:
    nat: float
    rob: float

    @property
    def total(self) -> float:
        return self.nat + self.rob


class Robustifier:
    """Teacher, student, optimiser and the step of Appendix B.

    teacher: the model as given (a PixelClassifier or any pixels -> logits module with a findable
    head); it is deep-copied into the student, then frozen. ``student`` is the module to save and
    evaluate (same class as the teacher).
    """

    def __init__(self, model: nn.Module, settings: Settings) -> None:
        import copy

        self.settings = settings
        self.distance = distances.get(settings.distance)
        self.teacher = model.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = copy.deepcopy(self.teacher)
        self.t_head = find_head(self.teacher)
        self.s_head = find_head(self.student)
        self.params = trainable_parameters(self.student, self.s_head)
        for _, p in self.params:
            p.requires_grad_(True)
        if not self.params:
            raise RobustifyError("the model has no parameters outside its head to train")
        self.optimizer = torch.optim.Adam([p for _, p in self.params], lr=settings.lr)
        self.step_count = 0

    def adversarial(self, x: Tensor) -> Tensor:
        """x_a: the online attack (eqs. 9.6-9.7) on the current student, in eval mode."""
        self.student.eval()
        return pairing_attack(self.student, x, eps=self.settings.eps, iters=self.settings.iters).x_adv

    def losses(self, x: Tensor, x_adv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(L_nat, L_rob) on float pixels ``x``; ``x_adv`` default: the online attack on the current student."""
        s = self.settings
        if x_adv is None:
            x_adv = self.adversarial(x)
        with torch.no_grad():
            g_t, _ = features_and_logits(self.teacher, self.t_head, x)
        set_modes(self.student, s.bn_stats)
        g_s, _ = features_and_logits(self.student, self.s_head, torch.cat([x, x_adv]))
        g0, ga = g_s[: len(x)], g_s[len(x):]
        return self.distance(g0, g_t), self.distance(ga, g0)

    def step(self, x: Tensor) -> StepLosses:
        """One Adam step on L_nat + L_rob for the batch ``x`` (float pixels in [0, 255])."""
        nat, rob = self.losses(x)
        self.optimizer.zero_grad(set_to_none=True)
        (nat + rob).backward()
        self.optimizer.step()
        self.student.eval()
        self.step_count += 1
        return StepLosses(float(nat.detach()), float(rob.detach()))

    # --- checkpoints -------------------------------------------------------------------------
    def student_state(self) -> dict[str, Tensor]:
        """The network's state dict (timm keys for a PixelClassifier: what ``--weights`` reads)."""
        net = getattr(self.student, "net", self.student)
        return {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}

    def load_student_state(self, sd: dict[str, Tensor]) -> None:
        net = getattr(self.student, "net", self.student)
        net.load_state_dict(sd)

    def optimizer_tensors(self) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        """Adam's per-parameter tensors (``optim.<i>.<name>``) and its param groups (JSON)."""
        sd = self.optimizer.state_dict()
        tensors = {}
        for i, state in sd["state"].items():
            for k, v in state.items():
                t = v if isinstance(v, Tensor) else torch.tensor(v)
                tensors[f"optim.{i}.{k}"] = t.detach().cpu().contiguous().clone()
        return tensors, sd["param_groups"]

    def load_optimizer_tensors(self, tensors: dict[str, Tensor], groups: list[dict[str, Any]]) -> None:
        state: dict[int, dict[str, Tensor]] = {}
        for key, v in tensors.items():
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})


@dataclass
class TrainResult:
    """out: run folder; epochs: epochs done in total; steps: optimiser steps in total; history:
    one dict per epoch (epoch, l_nat, l_rob, l_tot means, seconds); seconds: this call's wall time."""

    out: Path
    epochs: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def student_path(self) -> Path:
        return self.out / STUDENT


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def save_checkpoint(rob: Robustifier, out: Path, epoch: int, history: list[dict[str, float]]) -> None:
    """Write student.safetensors/.json and checkpoint.safetensors/.json for ``epoch`` epochs done."""
    out.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, "settings": rob.settings.to_dict(), "epoch": epoch, "step": rob.step_count,
            "history": history}
    student = rob.student_state()
    _save_tensors(out / STUDENT, student, {"format": FORMAT, "settings": json.dumps(rob.settings.to_dict())})
    _write_json(out / "student.json", info)
    opt_tensors, groups = rob.optimizer_tensors()
    tensors = {f"student.{k}": v for k, v in student.items()} | opt_tensors
    _save_tensors(out / CHECKPOINT, tensors, {"format": FORMAT})
    _write_json(out / "checkpoint.json", info | {"param_groups": groups})


def read_run_info(out: Path) -> dict[str, Any]:
    """checkpoint.json of a run folder (RobustifyError when absent or unreadable)."""
    path = Path(out) / "checkpoint.json"
    if not path.is_file() or not (Path(out) / CHECKPOINT).is_file():
        raise RobustifyError(f"no checkpoint in {out} to resume (run without --resume first)")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RobustifyError(f"cannot read {path}: {exc}") from exc
    if info.get("format") != FORMAT:
        raise RobustifyError(f"{path} is not a robustify checkpoint ({info.get('format')!r})")
    return info


def load_checkpoint(rob: Robustifier, out: Path) -> dict[str, Any]:
    """Restore student, Adam state and step count from ``out``; returns checkpoint.json."""
    from safetensors.torch import load_file

    info = read_run_info(out)
    saved = Settings(**info["settings"])
    if saved.comparable() != rob.settings.comparable():
        diff = {k: (v, rob.settings.comparable()[k]) for k, v in saved.comparable().items()
                if rob.settings.comparable()[k] != v}
        raise RobustifyError("the run in {} was made with other settings: {}".format(
            out, ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in diff.items())))
    tensors = load_file(str(Path(out) / CHECKPOINT))
    rob.load_student_state({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
    rob.load_optimizer_tensors({k: v for k, v in tensors.items() if k.startswith("optim.")}, info["param_groups"])
    rob.step_count = int(info["step"])
    return info


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """Index batches of one epoch: a permutation seeded by (seed, epoch), cut in ``batch_size``."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return list(perm.split(batch_size))


def train(model: nn.Module, images: Tensor, out: str | Path, settings: Settings, *, resume: bool = False,
          progress: bool = True, console: Any = None, max_steps: int | None = None) -> TrainResult:
    """Robustify ``model`` on ``images`` (uint8 or float pixels (N, 3, S, S), already at the training
    size); checkpoint in ``out`` after every epoch. ``resume``: continue from out's checkpoint (the
    settings but ``epochs`` must match). ``max_steps``: stop after this many steps in this call
    (for tests; the partial epoch is not saved). Returns a :class:`TrainResult`.
    """
    from ..progress import progress_bar

    out = Path(out)
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise RobustifyError(f"expected images (N, 3, S, S) with N >= 1, got {tuple(images.shape)}")
    if not resume and (out / CHECKPOINT).exists():
        raise RobustifyError(f"{out} already holds a run; continue it with --resume or choose another --out")
    device = next(model.parameters()).device
    rob = Robustifier(model, settings)
    history: list[dict[str, float]] = []
    start = 0
    if resume:
        info = load_checkpoint(rob, out)
        start, history = int(info["epoch"]), list(info["history"])
    t0 = time.perf_counter()
    n = len(images)
    steps_here = 0
    with progress_bar(progress, console) as bar:
        task = bar.add_task("robustify", total=max(0, settings.epochs - start) * n, status="")
        for epoch in range(start, settings.epochs):
            te, sums, seen = time.perf_counter(), [0.0, 0.0], 0
            for idx in batches(n, settings.batch_size, settings.seed, epoch):
                if max_steps is not None and steps_here >= max_steps:
                    return TrainResult(out, epoch, rob.step_count, history, time.perf_counter() - t0)
                x = images[idx].to(device).float()
                losses = rob.step(x)
                steps_here += 1
                sums[0] += losses.nat * len(idx)
                sums[1] += losses.rob * len(idx)
                seen += len(idx)
                bar.update(task, advance=len(idx), status=f"epoch {epoch + 1}/{settings.epochs} "
                           f"L_nat {losses.nat:.4g} L_rob {losses.rob:.4g}")
            history.append({"epoch": epoch + 1, "l_nat": sums[0] / seen, "l_rob": sums[1] / seen,
                            "l_tot": (sums[0] + sums[1]) / seen, "seconds": time.perf_counter() - te})
            save_checkpoint(rob, out, epoch + 1, history)
    return TrainResult(out, max(start, settings.epochs), rob.step_count, history, time.perf_counter() - t0)


def load_images(items: Sequence[Any], config: Any, size: int | None = None) -> tuple[Tensor, list[str]]:
    """uint8 pixels (N, 3, S, S) of image items (:class:`advimage.data.ImageItem`) as the model sees
    them (resize + centre crop per ``config``), at ``size`` (default: the model's input size), and
    the names of the files that could be read. Labels are not read. Unreadable files are skipped;
    none readable: RobustifyError."""
    from ..images import ImageReadError, load_for_model

    cfg = dataclasses.replace(config, input_size=size) if size else config
    xs, names = [], []
    for item in items:
        try:
            xs.append(load_for_model(item.path, cfg, item.data))
            names.append(Path(item.path).name)
        except (ImageReadError, OSError):
            continue
    if not xs:
        raise RobustifyError("none of the training images could be read")
    return torch.stack(xs), names
