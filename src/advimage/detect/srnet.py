"""SRNet (Boroumand, Chen & Fridrich, "Deep Residual Network for Steganalysis of Digital Images",
IEEE TIFS 14(5), 2019) with 3-channel input, its training as in thesis §8.4, and a detector.

Architecture (paper §II, Fig. 1 and Table I): 12 layers of four types, all convolutions 3×3,
stride 1, "same" padding, each followed by batch normalization (BN):

* Type 1 (layers 1–2): conv → BN → ReLU; 64 then 16 channels. Layer 1 takes the 3 colour
  channels (the paper's input is one grey channel; thesis §8.4 adapts the first layer).
* Type 2 (layers 3–7): residual unit, 16 channels: x + BN(conv(Type1(x))).
* Type 3 (layers 8–11): BN(conv(Type1(x))) → 3×3 average pooling with stride 2, plus a shortcut
  1×1 conv with stride 2 → BN; 16, 64, 128, 256 channels. No pooling in layers 1–7 (§II-A: it
  would average out the weak stego signal).
* Type 4 (layer 12): BN(conv(Type1(x))) → global average pooling; 512 channels.
* A fully connected layer to 2 logits (cover, stego) and softmax (in the loss).

Initialization and regularization follow the authors' published TensorFlow code (not stated in
the paper): He-normal conv kernels, conv biases 0.2, BN with running-average decay 0.9
(PyTorch momentum 0.1) and ε 1e-3, FC weights N(0, 0.01²) and bias 0, L2 weight decay 2·10⁻⁴ on
the conv kernels. Average pooling uses symmetric padding of 1 and excludes the padding from the
mean (TensorFlow's "SAME" pads only bottom/right for even sizes: a one-pixel shift of the windows).
The input is the raw pixel values in [0, 255], not normalized (as in the paper).

Training (thesis §8.4 and Ch. 8 spec [T], with the SRNet paper's optimizer and batch [I]): Adamax,
batches of 8 cover/adversarial pairs (16 images), learning rate 1e-3 for the first 100/180 of
the epochs and 1e-4 for the rest (100 + 80 epochs at full scale), pair-wise augmentation: the
same random horizontal mirror (p = 0.5) and rotation by 90° (p = 0.5, square images only) applied
to a cover and its adversarial image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .meta import read_meta, write_meta

FULL_EPOCHS, HIGH_LR_EPOCHS = 180, 100  # thesis: 1e-3 for epochs 1-100, then 1e-4 for 80 epochs


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=True)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.1)


class Type1(nn.Module):
    """conv 3×3 → BN → ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn = _conv(cin, cout), _bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Type2(nn.Module):
    """Residual unit: x + BN(conv(Type1(x))), channels unchanged."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.type1, self.conv, self.bn = Type1(c, c), _conv(c, c), _bn(c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn(self.conv(self.type1(x)))


class Type3(nn.Module):
    """AvgPool3×3/2(BN(conv(Type1(x)))) + BN(conv1×1/2(x)): halves H and W."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.type1, self.conv, self.bn = Type1(cin, cout), _conv(cout, cout), _bn(cout)
        self.shortcut, self.shortcut_bn = _conv(cin, cout, k=1, stride=2), _bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        main = F.avg_pool2d(self.bn(self.conv(self.type1(x))), 3, stride=2, padding=1, count_include_pad=False)
        return main + self.shortcut_bn(self.shortcut(x))


class Type4(nn.Module):
    """Global average of BN(conv(Type1(x))) -> (N, C)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.type1, self.conv, self.bn = Type1(cin, cout), _conv(cout, cout), _bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.type1(x))).mean(dim=(2, 3))


class SRNet(nn.Module):
    """SRNet on pixels: (N, C, H, W) float in [0, 255] -> logits (N, 2) [cover, stego].

    in_channels: 3 for colour (thesis), 1 for the paper's grey images. H, W >= 16 (four halvings).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.layers = nn.Sequential(
            Type1(in_channels, 64), Type1(64, 16),                               # layers 1-2
            *[Type2(16) for _ in range(5)],                                      # layers 3-7
            Type3(16, 16), Type3(16, 64), Type3(64, 128), Type3(128, 256),       # layers 8-11
            Type4(256, 512),                                                     # layer 12
        )
        self.fc = nn.Linear(512, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W) pixels, got {tuple(x.shape)}")
        return self.fc(self.layers(x))


# ----------------------------------------------------------------------------------------- data

def load_images(images: np.ndarray | Sequence[str | os.PathLike], name: str = "images") -> np.ndarray:
    """A uint8 array (N, H, W, 3), or image files decoded with Pillow -> (N, H, W, 3) uint8 (one size)."""
    if isinstance(images, np.ndarray):
        arr = images
    else:
        from .features import read_rgb

        arr = [read_rgb(p) for p in images]
        sizes = {a.shape for a in arr}
        if len(sizes) > 1:
            raise ValueError(f"{name}: images of different sizes {sorted(sizes)[:3]}; SRNet trains on one size")
        arr = np.stack(arr) if arr else np.zeros((0, 0, 0, 3), np.uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"{name}: expected (N, H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    return arr


def _to_tensor(x: np.ndarray, device: torch.device | str) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 on device."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float()


def augment_pairs(cover: Tensor, stego: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random horizontal mirror (p 0.5) and rot90 (p 0.5, square images) for each pair.

    cover, stego: (B, C, H, W). Returns the augmented pair batches (same shapes).
    """
    b = cover.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    rot = torch.rand(b, generator=generator) < 0.5
    if cover.shape[-1] != cover.shape[-2]:
        rot[:] = False
    out_c, out_s = cover.clone(), stego.clone()
    for i in range(b):
        for out in (out_c, out_s):
            v = out[i]
            if flip[i]:
                v = v.flip(-1)
            if rot[i]:
                v = v.rot90(1, dims=(-2, -1))
            out[i] = v
    return out_c, out_s


def lr_at(epoch: int, epochs: int, lr: float = 1e-3, lr_low: float = 1e-4) -> float:
    """Learning rate of epoch (0-based) out of ``epochs``: ``lr`` for the first round(epochs·100/180)
    epochs (at least 1), ``lr_low`` after."""
    high = max(1, round(epochs * HIGH_LR_EPOCHS / FULL_EPOCHS))
    return lr if epoch < high else lr_low


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class SRNetTraining:
    """A trained SRNet and its per-epoch history (epoch, lr, loss, accuracy on the training batches)."""

    model: SRNet
    history: list[dict[str, float]] = field(default_factory=list)


def train_srnet(covers: np.ndarray | Sequence[str | os.PathLike], stegos: np.ndarray | Sequence[str | os.PathLike],
                *, epochs: int = FULL_EPOCHS, lr: float = 1e-3, lr_low: float = 1e-4, batch_pairs: int = 8,
                weight_decay: float = 2e-4, augment: bool = True, device: str | torch.device | None = None,
                seed: int = 0, progress: bool = True, model: SRNet | None = None,
                checkpoint: str | os.PathLike | None = None) -> SRNetTraining:
    """Train SRNet on pairs: covers[i] and stegos[i] are one cover and its adversarial image.

    covers, stegos: (N, H, W, 3) uint8 arrays or lists of N image files (one size).
    epochs: passes over the pairs; the learning rate is ``lr`` for the first 100/180 of them, then
    ``lr_low`` (thesis: 180 = 100 + 80). batch_pairs: pairs per batch (8 pairs = 16 images).
    device: None = cuda if available. checkpoint: a folder where the state after every epoch is
    kept (:func:`save_checkpoint`: weights, Adamax state, the shuffling generator, history; no
    pickle); a later call with the same folder and settings resumes after the last epoch kept, and
    ends where an uninterrupted run would (same batches, same augmentation). Returns the model
    (eval mode, on ``device``) and history.
    """
    from ..progress import progress_bar

    c, s = load_images(covers, "covers"), load_images(stegos, "stegos")
    if c.shape != s.shape:
        raise ValueError(f"covers {c.shape} and stegos {s.shape} must be pairs of the same shape")
    if len(c) == 0:
        raise ValueError("no training pairs")
    if epochs < 1 or batch_pairs < 1:
        raise ValueError(f"epochs and batch_pairs must be >= 1, got {epochs} and {batch_pairs}")
    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = (model or SRNet(3)).to(dev)
    decay = [p for n, p in net.named_parameters() if p.ndim == 4]  # conv kernels
    rest = [p for n, p in net.named_parameters() if p.ndim != 4]
    opt = torch.optim.Adamax([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr)
    ct, st = torch.from_numpy(c).permute(0, 3, 1, 2), torch.from_numpy(s).permute(0, 3, 1, 2)  # uint8, CPU
    history: list[dict[str, float]] = []
    steps = math.ceil(len(c) / batch_pairs)
    run_key = {"pairs": len(c), "shape": list(c.shape[1:]), "epochs": epochs, "lr": lr, "lr_low": lr_low,
               "batch_pairs": batch_pairs, "weight_decay": weight_decay, "augment": augment, "seed": seed}
    first = 0
    if checkpoint is not None and (Path(checkpoint) / CHECKPOINT_META).is_file():
        history = load_checkpoint(checkpoint, net, opt, gen, run_key)
        first = len(history)
    with progress_bar(progress) as bar:
        task = bar.add_task("SRNet", total=epochs * steps, completed=first * steps, status="")
        for epoch in range(first, epochs):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch, epochs, lr, lr_low)
            net.train()
            order = torch.randperm(len(c), generator=gen)
            loss_sum, correct, seen = 0.0, 0, 0
            for k in range(steps):
                idx = order[k * batch_pairs:(k + 1) * batch_pairs]
                xc, xs = ct[idx].float(), st[idx].float()
                if augment:
                    xc, xs = augment_pairs(xc, xs, gen)
                x = torch.cat([xc, xs]).to(dev)
                y = torch.cat([torch.zeros(len(idx)), torch.ones(len(idx))]).long().to(dev)
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.advance(task)
            history.append({"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "loss": loss_sum / seen,
                            "accuracy": correct / seen})
            bar.update(task, status=f"loss {loss_sum / seen:.4f} acc {correct / seen:.3f}")
            if checkpoint is not None:
                save_checkpoint(checkpoint, net, opt, gen, run_key, history)
    net.eval()
    return SRNetTraining(net, history)


CHECKPOINT_META = "checkpoint.json"


def save_checkpoint(folder: str | os.PathLike, net: SRNet, opt: torch.optim.Optimizer, gen: torch.Generator,
                    run_key: dict[str, Any], history: list[dict[str, float]]) -> None:
    """Weights, optimizer tensors and the generator's state as safetensors, the rest as JSON;
    the JSON is written last (atomically), so a checkpoint it names is complete."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    scalars: dict[str, Any] = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    tensors["generator"] = gen.get_state()
    epoch = len(history)
    name = f"epoch{epoch:04d}.safetensors"
    save_file(tensors, str(folder / (name + ".tmp")))
    (folder / (name + ".tmp")).replace(folder / name)
    meta = {"run": run_key, "history": history, "weights": name, "optimizer_scalars": scalars}
    tmp = folder / (CHECKPOINT_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(folder / CHECKPOINT_META)
    for old in folder.glob("epoch*.safetensors"):  # only the last one is needed
        if old.name != name:
            old.unlink()


def load_checkpoint(folder: str | os.PathLike, net: SRNet, opt: torch.optim.Optimizer, gen: torch.Generator,
                    run_key: dict[str, Any]) -> list[dict[str, float]]:
    """Restore what :func:`save_checkpoint` kept into ``net``, ``opt`` and ``gen``; the history.
    ValueError if the checkpoint was made with other training settings."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / CHECKPOINT_META).read_text())
    if meta["run"] != json.loads(json.dumps(run_key)):
        raise ValueError(f"{folder}: checkpoint of another SRNet training ({meta['run']}), not {run_key}")
    tensors = load_file(str(folder / meta["weights"]))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state = opt.state_dict()
    for i in range(len(state["param_groups"][0]["params"]) + len(state["param_groups"][1]["params"])):
        # load_state_dict moves the state to the parameters' device (the step count stays on the CPU)
        entry: dict[str, Any] = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        entry.update({k.split(".", 1)[1]: v for k, v in meta["optimizer_scalars"].items()
                      if k.split(".", 1)[0] == str(i)})
        if entry:
            state["state"][i] = entry
    opt.load_state_dict(state)
    gen.set_state(tensors["generator"])
    return list(meta["history"])


# ------------------------------------------------------------------------------------- detector

class SRNetDetector:
    """SRNet as a detector on images: ``score(images (N, H, W, 3) uint8) -> (N,)`` = logit(stego) −
    logit(cover) (higher = more likely adversarial). ``fit`` trains with :func:`train_srnet`
    (keyword settings from the constructor); ``save``/``load`` use safetensors + ``detector.json``."""

    type = "srnet"
    features = None  # scores pixels, not rich-model features

    def __init__(self, model: SRNet | None = None, *, device: str | torch.device | None = None,
                 **train_settings: Any) -> None:
        self.device = pick_device(device)
        self.model = (model or SRNet(3)).to(self.device).eval()
        self.train_settings = train_settings
        self.history: list[dict[str, float]] = []

    def fit(self, cover: np.ndarray | Sequence[str | os.PathLike],
            stego: np.ndarray | Sequence[str | os.PathLike]) -> SRNetDetector:
        result = train_srnet(cover, stego, device=self.device, model=self.model, **self.train_settings)
        self.model, self.history = result.model, result.history
        return self

    @torch.no_grad()
    def score(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        images = load_images(images)
        self.model.eval()
        out = [self.model(_to_tensor(images[i:i + batch_size], self.device)) for i in range(0, len(images), batch_size)]
        if not out:
            return np.zeros(0)
        logits = torch.cat(out).double().cpu()
        return (logits[:, 1] - logits[:, 0]).numpy()

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"))
        settings = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in self.train_settings.items()}
        write_meta(directory, self.type, None, {"in_channels": self.model.in_channels, "train": settings,
                                                "history": self.history})
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> SRNetDetector:
        from safetensors.torch import load_file

        meta = read_meta(directory, cls.type)
        model = SRNet(int(meta["params"].get("in_channels", 3)))
        model.load_state_dict(load_file(str(Path(directory) / "weights.safetensors")))
        det = cls(model, device=device)
        det.history = meta["params"].get("history", [])
        return det
