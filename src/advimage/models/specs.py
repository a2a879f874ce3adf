"""Classifier specs: a model name, optionally behind defenses, as one string.

``efficientnet_lite0`` — the model; ``efficientnet_lite0+jpeg:75`` — behind the JPEG defense at
quality 75 (BPDA identity gradient); ``timm:resnet50+jpeg:90``. Defenses come from
:mod:`advimage.defenses` (``advimage.defenses.names()``); the one parameter after ``:`` is the
defense's first option (``quality`` for JPEG).
"""

from __future__ import annotations

import inspect

from .registry import UnknownModelError, names


def parse(spec: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``"m+jpeg:75"`` -> ("m", [("jpeg", "75")])."""
    model, *defs = spec.split("+")
    out = []
    for d in defs:
        name, sep, arg = d.partition(":")
        out.append((name.strip(), arg.strip() if sep else None))
    return model.strip(), out


def check(spec: str) -> None:
    """Refuse an unknown model or defense with the valid names, or a defense argument its factory's
    ``check_arg`` refuses (``+bits:0``), before anything is built."""
    from ..defenses import get as get_defense

    model, defs = parse(spec)
    if model not in names() and ":" not in model:
        raise UnknownModelError(f"unknown model {model!r}; registered models: {', '.join(names())} "
                                "(or timm:<name> / torchvision:<name>, optionally +jpeg:QUALITY)")
    for name, arg in defs:
        factory = get_defense(name)
        if arg is not None and hasattr(factory, "check_arg"):
            factory.check_arg(arg)


def load_classifier(spec: str, device: str | None = None, weights: str | None = None):
    """Build ``spec``: the model (see :func:`advimage.models.load_model`) wrapped by each defense."""
    from . import load_model

    check(spec)
    model_name, defs = parse(spec)
    model = load_model(model_name, device=device, **({"weights": weights} if weights else {}))
    for name, arg in defs:
        model = apply_defense(model, name, arg)
    return model


def apply_defense(model, name: str, arg: str | None = None):
    """``model`` behind the registered defense ``name``, ``arg`` (text after ``:``) as its first option."""
    from ..defenses import get as get_defense

    factory = get_defense(name)
    kwargs = {}
    if arg is not None:
        if hasattr(factory, "check_arg"):
            factory.check_arg(arg)
        first = [p for p in inspect.signature(factory).parameters if p != "model"][0]
        kwargs[first] = int(arg) if arg.lstrip("-").isdigit() else arg
    return factory(model, **kwargs).to(model.device).eval()
