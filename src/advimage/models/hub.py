"""Any timm or torchvision classifier by name: local cache first, then the hub if it is reachable.

Weights are looked for, in order,

1. in an explicit file (``weights=`` / ``--weights FILE``);
2. in the local caches, without any network access: the Hugging Face cache for timm
   (``<HF_HUB_CACHE>/models--<org>--<name>/snapshots/<rev>/model.safetensors`` or
   ``pytorch_model.bin``, plus ``torch.hub.get_dir()/checkpoints/<file>`` for timm models
   that are only published as a URL) and ``torch.hub.get_dir()/checkpoints/<file>`` for
   torchvision;
3. on the hub (``timm.create_model(arch, pretrained=True)`` /
   ``torchvision.models.get_model(arch, weights="DEFAULT")``), unless offline mode is on
   (``offline=True``, ``ADVIMAGE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) or the host does not
   answer a short TCP connect; then a one-line :class:`WeightsError` says where weights were
   looked for and how to provide them, within a couple of seconds.

Weight files are read with safetensors or ``torch.load(weights_only=True)``, never by
running pickled code.

Note on ``HF_HUB_OFFLINE``: ``huggingface_hub`` reads the environment variable once, at import,
into ``huggingface_hub.constants.HF_HUB_OFFLINE``, and consults only that constant afterwards
(through ``constants.is_offline_mode()``). Setting the environment variable later has no
effect, which is why :func:`_hf_offline` patches the constant instead.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from .classifier import ModelConfig, PixelClassifier
from .imagenet import class_names
from .weights import WeightsError, load_state_dict

PROBE_TIMEOUT_S = 1.5
"""How long a TCP connect to the hub may take before the network counts as unreachable."""

_TRUE = {"1", "true", "yes", "on"}
_REACHABLE: dict[tuple[str, int], tuple[bool, str]] = {}  # per-process answers of :func:`_probe`
_LOCK = threading.Lock()
_PATCH_LOCK = threading.Lock()  # guards the temporary patch of torchvision's WeightsEnum
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for, in order


# --------------------------------------------------------------------------------------------
# offline mode and network probing


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _offline_requested(offline: bool | None) -> bool:
    """``offline`` if given, else whether ADVIMAGE_OFFLINE / HF_HUB_OFFLINE (env or hub constant) say so."""
    if offline is not None:
        return bool(offline)
    if any(_env_true(k) for k in ("ADVIMAGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


@contextmanager
def _hf_offline(value: bool = True):
    """Set ``huggingface_hub.constants.HF_HUB_OFFLINE`` (the flag the hub consults) while loading."""
    try:
        from huggingface_hub import constants
    except ImportError:  # timm without huggingface_hub
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = value
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _probe_address(url: str) -> tuple[str, int]:
    """Host and port a download of ``url`` connects to first (the proxy, if one is configured)."""
    parts = urlparse(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        default_port = 443 if p.scheme == "https" else 1080 if p.scheme.startswith("socks") else 80
        host, port = p.hostname or host, p.port or default_port
    return host, port


def _probe(url: str, timeout: float | None = None) -> tuple[bool, str]:
    """Whether a TCP connection to ``url``'s host (or proxy) opens within ``timeout``, and if not, why.

    Answers are cached per process. The connect runs in a daemon thread, so that a hanging DNS
    lookup cannot hold us up either.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    key = _probe_address(url)
    with _LOCK:
        if key in _REACHABLE:
            return _REACHABLE[key]
    outcome: list[str] = []

    def attempt() -> None:
        try:
            with socket.create_connection(key, timeout=timeout):
                outcome.append("")
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            outcome.append(_first_line(exc))

    thread = threading.Thread(target=attempt, name="advimage-net-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    answer = (outcome[0] == "", outcome[0]) if outcome else (False, f"no answer within {timeout:g} s")
    with _LOCK:
        _REACHABLE[key] = answer
    return answer


def _why_not_online(url: str, offline: bool | None) -> str | None:
    """None if downloading from ``url`` may be tried, else the reason why not."""
    if _offline_requested(offline):
        how = "offline=True" if offline else "ADVIMAGE_OFFLINE / HF_HUB_OFFLINE is set"
        return f"offline mode is on ({how})"
    ok, reason = _probe(url)
    if not ok:
        host, port = _probe_address(url)
        return f"the network is unreachable (connecting to {host}:{port}: {reason})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------------
# local caches


def _hf_cache_dirs() -> list[Path]:
    """The Hugging Face hub cache as the environment says now, and as huggingface_hub computed at import."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not env:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
        env = os.path.join(home, "hub")
    dirs = [Path(os.path.expandvars(os.path.expanduser(env)))]
    try:
        from huggingface_hub import constants
        dirs.append(Path(constants.HF_HUB_CACHE))
    except ImportError:
        pass
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _torch_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its download."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _timm_cached(cfg) -> tuple[Path | None, list[str]]:
    """A locally cached weight file for timm's pretrained ``cfg``, and the places looked at."""
    looked: list[str] = []
    if cfg.file:
        if Path(cfg.file).is_file():
            return Path(cfg.file), looked
        looked.append(str(cfg.file))
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from timm.models._hub import hf_split

        repo, revision = hf_split(cfg.hf_hub_id)
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(_HF_FILES)
        if files[0].endswith(".bin"):
            files.insert(0, files[0][: -len(".bin")].replace("pytorch_model", "model") + ".safetensors")
        for d in _hf_cache_dirs():
            for name in files:
                found = try_to_load_from_cache(repo, name, cache_dir=d, revision=revision)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found), looked
            looked.append(f"{d / ('models--' + repo.replace('/', '--'))}/snapshots/*/{{{','.join(files)}}}")
    if cfg.url:
        path = _torch_checkpoint(cfg.url)
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


# --------------------------------------------------------------------------------------------
# builders


def _names(n: int) -> list[str] | None:
    return list(class_names()) if n == 1000 else None


def _timm_from_file(arch: str, path: Path):
    """timm's own pretrained loading (filters, head handling) fed with a safely read local file."""
    import timm

    if path.suffix == ".npz":  # original JAX checkpoints: timm reads them with numpy (no pickle)
        overlay = {"file": str(path), "custom_load": True}
    else:
        overlay = {"state_dict": load_state_dict(path)}
    try:
        with _hf_offline(True):  # no hub look-up may happen while loading from the cache
            net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:
        raise WeightsError(f"cached weights {path} do not fit timm:{arch}: {_first_line(exc)}") from exc
    net.pretrained_cfg.pop("state_dict", None)
    return net


def load_timm(arch: str, weights: str | Path | None = None, *, offline: bool | None = None) -> PixelClassifier:
    """timm's ``arch`` with weights from ``weights``, the local caches, or (when online) the hub."""
    import timm

    if arch not in timm.list_models(arch) and not timm.is_model(arch):
        raise WeightsError(f"timm has no model {arch!r}; see timm.list_models()")
    if weights is not None:
        net = timm.create_model(arch, pretrained=False)
        net.load_state_dict(load_state_dict(weights))
    else:
        net = _timm_pretrained(arch, offline)
    cfg = net.pretrained_cfg
    config = ModelConfig(
        name=f"timm:{arch}", input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)), interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        num_classes=int(cfg.get("num_classes", 1000)), source=f"timm:{arch}",
    )
    return PixelClassifier(net, config, _names(config.num_classes))


def _timm_pretrained(arch: str, offline: bool | None):
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise WeightsError(f"timm:{arch}: {exc}") from exc
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(f"timm lists no pretrained weights for timm:{arch}; pass a weight file with --weights FILE")
    path, looked = _timm_cached(cfg)
    if path is not None:
        return _timm_from_file(arch, path)

    if cfg.hf_hub_id:
        from huggingface_hub import constants
        url, where = constants.ENDPOINT, f"the Hugging Face hub ({cfg.hf_hub_id})"
    elif cfg.url:
        url, where = cfg.url, cfg.url
    else:
        raise WeightsError(f"no local weights for timm:{arch} (looked in {'; '.join(looked)}); "
                           "pass a weight file with --weights FILE (weights=FILE)")
    why = _why_not_online(url, offline)
    if why is not None:
        if cfg.hf_hub_id:
            repo = cfg.hf_hub_id.split("@")[0]
            folder = _hf_cache_dirs()[0] / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>"
            hint = (f"or put {_HF_FILES[0]} of {repo} into {folder} with refs/main naming the revision "
                    f"(`hf download {repo} {_HF_FILES[0]}` where the network is reachable does that; "
                    "HF_HOME / HF_HUB_CACHE choose the cache)")
        else:
            hint = f"or put {os.path.basename(urlparse(cfg.url).path)} into {_torch_checkpoint(cfg.url).parent}"
        raise WeightsError(
            f"no local weights for timm:{arch} (looked in {'; '.join(looked)}) and {why}; "
            f"pass a weight file with --weights FILE (weights=FILE), {hint}"
        )
    try:
        # timm's own download and loading (safetensors, or torch.load with weights_only=True)
        if offline is False:  # explicitly online: override an HF_HUB_OFFLINE read at import time
            with _hf_offline(False):
                return timm.create_model(arch, pretrained=True)
        return timm.create_model(arch, pretrained=True)
    except Exception as exc:
        raise WeightsError(
            f"no local weights for timm:{arch} and downloading them from {where} failed: {_first_line(exc)}; "
            "pass a weight file with --weights FILE (weights=FILE)"
        ) from exc


@contextmanager
def _torchvision_reads(path: Path, url: str, download: bool):
    """Make torchvision's builders take their state dict from ``path`` (downloaded first if asked), safely.

    torchvision's ``WeightsEnum.get_state_dict`` calls ``torch.hub.load_state_dict_from_url`` with
    ``weights_only=False``; routing it through :func:`load_state_dict` keeps torchvision's model
    construction (weight-specific arguments, key remapping) while never unpickling code.
    """
    from torchvision.models._api import WeightsEnum

    def get_state_dict(self, *args, **kwargs):
        if download and not path.is_file():
            import torch.hub

            path.parent.mkdir(parents=True, exist_ok=True)
            match = torch.hub.HASH_REGEX.search(path.name)
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None,
                                           progress=kwargs.get("progress", True))
        return load_state_dict(path)

    with _PATCH_LOCK:
        old = WeightsEnum.__dict__["get_state_dict"]
        WeightsEnum.get_state_dict = get_state_dict
        try:
            yield
        finally:
            WeightsEnum.get_state_dict = old


def load_torchvision(arch: str, weights: str | Path | None = None, *,
                     offline: bool | None = None) -> PixelClassifier:
    """torchvision's ``arch`` with weights from ``weights``, ``torch.hub.get_dir()/checkpoints`` or the web."""
    import torchvision

    try:
        default = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception as exc:
        raise WeightsError(f"torchvision has no model {arch!r}; see torchvision.models.list_models()") from exc
    if weights is not None:
        net = torchvision.models.get_model(arch, weights=None)
        net.load_state_dict(load_state_dict(weights))
    else:
        cached = _torch_checkpoint(default.url)
        download = not cached.is_file()
        if download:
            why = _why_not_online(default.url, offline)
            if why is not None:
                raise WeightsError(
                    f"no local weights for torchvision:{arch}: expected {cached}, and {why}; "
                    f"pass a weight file with --weights FILE (weights=FILE) or put {default.url} at {cached}"
                )
        try:
            with _torchvision_reads(cached, default.url, download):
                net = torchvision.models.get_model(arch, weights=default)
        except WeightsError:
            raise
        except Exception as exc:
            what = f"downloading {default.url} failed" if download else f"cached weights {cached} do not fit"
            raise WeightsError(f"torchvision:{arch}: {what}: {_first_line(exc)}; "
                               "pass a weight file with --weights FILE (weights=FILE)") from exc
    tf = default.transforms()
    crop = int(tf.crop_size[0])
    interp = str(getattr(tf.interpolation, "value", tf.interpolation)).lower()
    config = ModelConfig(
        name=f"torchvision:{arch}", input_size=crop, crop_pct=crop / int(tf.resize_size[0]),
        interpolation=interp, mean=tuple(tf.mean), std=tuple(tf.std), num_classes=len(default.meta["categories"]),
        source=f"torchvision:{arch}",
    )
    return PixelClassifier(net, config, list(default.meta["categories"]))


def load_hub_model(source: str, arch: str, weights: str | Path | None = None, *,
                   offline: bool | None = None) -> PixelClassifier:
    """Build ``source:arch`` where source is ``timm`` or ``torchvision``.

    ``offline=None`` follows ``ADVIMAGE_OFFLINE`` / ``HF_HUB_OFFLINE``; ``True`` never touches the
    network; ``False`` allows downloads (when the hub answers).
    """
    if source == "timm":
        return load_timm(arch, weights, offline=offline)
    if source == "torchvision":
        return load_torchvision(arch, weights, offline=offline)
    raise WeightsError(f"unknown model source {source!r}; use timm:<name> or torchvision:<name>")
