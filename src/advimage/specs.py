"""Classifier specs: a model name, optionally behind defenses, as one string.

``efficientnet_lite0`` — the model; ``efficientnet_lite0+jpeg:75`` — behind the JPEG defense at
quality 75 (BPDA identity gradient); ``timm:resnet50+jpeg:90``;
``efficientnet_lite0@runs/rob/student.safetensors`` — the model with the weights of that file
(what ``--weights`` reads; e.g. a student of ``advimage robustify``), behind defenses if ``+...``
follows. Defenses come from
:mod:`advimage.defenses` (``advimage.defenses.names()``); the one parameter after ``:`` is the
defense's first option (``quality`` for JPEG).

A spec combines a model and defenses, so this module sits above :mod:`advimage.models` and
:mod:`advimage.defenses` (which wraps models); ``advimage.models.specs`` is an alias of it.
"""

from __future__ import annotations

import inspect

from .models.registry import MODELS


def parse(spec: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``"m+jpeg:75"`` -> ("m", [("jpeg", "75")])."""
    model, *defs = spec.split("+")
    out = []
    for d in defs:
        name, sep, arg = d.partition(":")
        out.append((name.strip(), arg.strip() if sep else None))
    return model.strip(), out


def split_weights(model: str) -> tuple[str, str | None]:
    """``"m@path"`` -> ("m", "path"); ``"m"`` -> ("m", None)."""
    name, sep, path = model.partition("@")
    return name.strip(), (path.strip() or None) if sep else None


def check(spec: str) -> None:
    """Refuse an unknown model or defense with the valid names, a defense argument its factory's
    ``check_arg`` refuses (``+bits:0``), or a missing ``@`` weight file, before anything is built."""
    from pathlib import Path

    from .defenses import get as get_defense
    from .models.weights import WeightsError

    model, defs = parse(spec)
    model, weights = split_weights(model)
    if weights is not None and not Path(weights).is_file():
        raise WeightsError(f"{spec!r}: weight file not found: {weights}")
    if model not in MODELS and ":" not in model:
        raise MODELS.unknown(model, hint=" (or timm:<name> / torchvision:<name>, optionally +jpeg:QUALITY)")
    for name, arg in defs:
        factory = get_defense(name)
        if arg is not None and hasattr(factory, "check_arg"):
            factory.check_arg(arg)


def load_classifier(spec: str, device: str | None = None, weights: str | None = None):
    """Build ``spec``: the model (see :func:`advimage.models.load_model`) wrapped by each defense."""
    from .models import load_model

    check(spec)
    model_name, defs = parse(spec)
    model_name, spec_weights = split_weights(model_name)
    if spec_weights is not None:
        if weights is not None and weights != spec_weights:
            raise ValueError(f"{spec!r} names its weights; do not also pass weights={weights!r}")
        weights = spec_weights
    model = load_model(model_name, device=device, **({"weights": weights} if weights else {}))
    for name, arg in defs:
        model = apply_defense(model, name, arg)
    return model


def apply_defense(model, name: str, arg: str | None = None):
    """``model`` behind the registered defense ``name``, ``arg`` (text after ``:``) as its first option."""
    from .defenses import get as get_defense

    factory = get_defense(name)
    kwargs = {}
    if arg is not None:
        if hasattr(factory, "check_arg"):
            factory.check_arg(arg)
        first = [p for p in inspect.signature(factory).parameters if p != "model"][0]
        kwargs[first] = int(arg) if arg.lstrip("-").isdigit() else arg
    return factory(model, **kwargs).to(model.device).eval()
