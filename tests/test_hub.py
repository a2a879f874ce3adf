"""timm / torchvision weights: local caches first, no network when offline, fast clear failures."""

from __future__ import annotations

import os
import pickle
import socket
import time
from pathlib import Path

import pytest
import torch

from advimage.models import PixelClassifier, WeightsError, hub
from advimage.models.hub import load_hub_model

TIMM_ARCH = "resnet10t"  # about 5 M parameters, builds in well under a second
TV_ARCH = "squeezenet1_1"  # about 1.2 M parameters
REVISION = "0123456789abcdef0123456789abcdef01234567"


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches under tmp_path, offline env vars cleared."""
    import huggingface_hub.constants as hf_constants

    hf_home = tmp_path / "hf"
    hf_cache = hf_home / "hub"
    torch_hub = tmp_path / "torch" / "hub"
    # huggingface_hub reads HF_HOME / HF_HUB_CACHE once, at import, into constants.HF_HUB_CACHE,
    # and hf_hub_download / try_to_load_from_cache default to that constant: patch both.
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(torch_hub))
    for name in ("ADVIMAGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_REACHABLE", {})  # forget earlier probes
    monkeypatch.chdir(tmp_path)  # where _Evil would write
    return {"hf": hf_cache, "torch": torch_hub}


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once, and is counted."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _timm_repo() -> str:
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(TIMM_ARCH).hf_hub_id


def _hf_snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` in the hub cache layout, with refs/main pointing at it."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / REVISION
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    return snap


def _random_timm_state():
    import timm

    torch.manual_seed(0)
    net = timm.create_model(TIMM_ARCH, pretrained=False).eval()
    return net, {k: v.contiguous() for k, v in net.state_dict().items()}


def _same_weights(model: PixelClassifier, state: dict[str, torch.Tensor]) -> None:
    got = model.net.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize("file_name", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("offline", [None, True])
def test_timm_weights_come_from_the_local_hf_cache_without_network(caches, no_network, file_name, offline):
    from safetensors.torch import save_file

    net, state = _random_timm_state()
    path = _hf_snapshot(caches["hf"], _timm_repo()) / file_name
    if file_name.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = load_hub_model("timm", TIMM_ARCH, offline=offline)
    assert isinstance(model, PixelClassifier)
    _same_weights(model, state)
    assert "state_dict" not in model.net.pretrained_cfg
    assert model.config.name == f"timm:{TIMM_ARCH}" and model.config.num_classes == 1000
    x = torch.rand(1, 3, 64, 64) * 255
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x / 255 - mean) / std), atol=1e-4)
    assert no_network == []  # not even a reachability probe


def test_timm_safetensors_is_preferred_over_pytorch_model_bin(caches, no_network):
    from safetensors.torch import save_file

    _, state = _random_timm_state()
    snap = _hf_snapshot(caches["hf"], _timm_repo())
    save_file(state, str(snap / "model.safetensors"))
    with open(snap / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    _same_weights(load_hub_model("timm", TIMM_ARCH), state)
    assert not Path("PWNED").exists()


def test_timm_pickled_code_in_the_cache_is_refused(caches, no_network):
    snap = _hf_snapshot(caches["hf"], _timm_repo())
    with open(snap / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(WeightsError, match="safely"):
        load_hub_model("timm", TIMM_ARCH)
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("how", ["argument", "ADVIMAGE_OFFLINE", "HF_HUB_OFFLINE", "unreachable"])
def test_timm_missing_weights_fail_fast_with_advice(caches, no_network, monkeypatch, how):
    if how != "unreachable":  # then no connection may even be tried
        monkeypatch.setattr(hub, "_probe", lambda *a, **k: pytest.fail("network probed in offline mode"))
    if how in ("ADVIMAGE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(how, "1")  # set after huggingface_hub's import, like in the issue
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_hub_model("timm", TIMM_ARCH, offline=True if how == "argument" else None)
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    assert "\n" not in msg
    assert "no local weights" in msg and "--weights" in msg
    assert str(caches["hf"]) in msg  # where it looked, and where to put them
    assert ("unreachable" if how == "unreachable" else "offline mode") in msg
    assert info.value.__cause__ is None  # not a wrapped traceback from the hub


def test_unreachable_network_is_detected_fast_and_once(caches, monkeypatch):
    calls = []

    def hang(address, timeout=None, *args, **kwargs):
        calls.append(address)
        time.sleep(timeout + 2)  # a black-holed connection; the probe must not wait for it
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 0.2)
    for _ in range(2):
        start = time.perf_counter()
        with pytest.raises(WeightsError, match="unreachable"):
            load_hub_model("timm", TIMM_ARCH)
        assert time.perf_counter() - start < 3
    assert len(calls) == 1  # the answer is cached per process


def test_timm_online_path_uses_timm_pretrained_loading(caches, monkeypatch):
    import timm

    monkeypatch.setattr(hub, "_probe", lambda *a, **k: (True, ""))
    real = timm.create_model
    seen = []

    def fake_create(name, pretrained=False, **kwargs):
        seen.append((name, pretrained, kwargs))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create)
    model = load_hub_model("timm", TIMM_ARCH)
    assert seen == [(TIMM_ARCH, True, {})]
    assert isinstance(model, PixelClassifier)

    def failing(name, pretrained=False, **kwargs):
        raise OSError("connection reset\nmore\nlines")

    monkeypatch.setattr(timm, "create_model", failing)
    expected = "downloading them from the Hugging Face hub .* failed: OSError: connection reset;"
    with pytest.raises(WeightsError, match=expected) as info:
        load_hub_model("timm", TIMM_ARCH)
    assert "\n" not in str(info.value) and "--weights" in str(info.value)


def test_explicit_offline_false_overrides_hf_hub_offline(caches, monkeypatch):
    import huggingface_hub.constants as hf_constants
    import timm

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_probe", lambda *a, **k: (True, ""))
    real = timm.create_model
    during = []

    def fake_create(name, pretrained=False, **kwargs):
        during.append(hf_constants.HF_HUB_OFFLINE)
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create)
    load_hub_model("timm", TIMM_ARCH, offline=False)
    assert during == [False] and hf_constants.HF_HUB_OFFLINE is True


def test_explicit_weight_file_still_wins(caches, no_network, tmp_path):
    from safetensors.torch import save_file

    _, state = _random_timm_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    _same_weights(load_hub_model("timm", TIMM_ARCH, weights=path, offline=True), state)


# ------------------------------------------------------------------------------------ torchvision


def _tv_checkpoint(torch_hub: Path) -> Path:
    import torchvision

    url = torchvision.models.get_model_weights(TV_ARCH).DEFAULT.url
    path = torch_hub / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _random_tv_state():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(TV_ARCH, weights=None).state_dict()


@pytest.mark.parametrize("offline", [None, True])
def test_torchvision_weights_come_from_torch_hub_checkpoints_without_network(caches, no_network, offline):
    state = _random_tv_state()
    torch.save(state, _tv_checkpoint(caches["torch"]))
    model = load_hub_model("torchvision", TV_ARCH, offline=offline)
    _same_weights(model, state)
    assert model.config.name == f"torchvision:{TV_ARCH}" and model.class_names[281] == "tabby"
    assert no_network == []


def test_torchvision_pickled_code_in_the_cache_is_refused(caches, no_network):
    with open(_tv_checkpoint(caches["torch"]), "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(WeightsError, match="safely"):
        load_hub_model("torchvision", TV_ARCH)
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("how", ["argument", "ADVIMAGE_OFFLINE", "unreachable"])
def test_torchvision_missing_weights_fail_fast_with_advice(caches, no_network, monkeypatch, how):
    if how == "ADVIMAGE_OFFLINE":
        monkeypatch.setenv(how, "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_hub_model("torchvision", TV_ARCH, offline=True if how == "argument" else None)
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    assert "\n" not in msg and "no local weights" in msg and "--weights" in msg
    assert str(_tv_checkpoint(caches["torch"])) in msg
    if how != "unreachable":
        assert no_network == []


def test_torchvision_download_is_loaded_safely(caches, monkeypatch):
    """Online: torchvision builds the model, torch.hub downloads the file, load_state_dict reads it."""
    state = _random_tv_state()
    monkeypatch.setattr(hub, "_probe", lambda *a, **k: (True, ""))
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, hash_prefix))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    _same_weights(load_hub_model("torchvision", TV_ARCH), state)
    target = _tv_checkpoint(caches["torch"])
    assert target.is_file()
    assert fetched == [(f"https://download.pytorch.org/models/{target.name}", target.name.split("-")[-1][:-4])]

    # a downloaded file holding pickled code is refused like a cached one
    target.unlink()
    def evil_download(url, dst, *args, **kwargs):
        with open(dst, "wb") as fh:
            pickle.dump({"w": _Evil()}, fh)

    monkeypatch.setattr(torch.hub, "download_url_to_file", evil_download)
    with pytest.raises(WeightsError, match="safely"):
        load_hub_model("torchvision", TV_ARCH)
    assert not Path("PWNED").exists()


def test_unknown_source():
    with pytest.raises(WeightsError, match="unknown model source"):
        load_hub_model("keras", "resnet50", offline=True)
