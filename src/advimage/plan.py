"""The plan: what the engine does for a :class:`~advimage.engine.Settings`, resolved once.

:func:`resolve` checks a settings object (every refusal of a bad combination lives here, so that
``Settings(...)``, ``advimage attack`` and ``advimage bench`` refuse alike) and turns it into a
frozen :class:`Plan`: the attack and its arguments, the quantizer specs and options, the
pipelines the attack goes through, those the quantizer's λ search must fool and those each file
is verified through, and the budget split.

Paths are named as :mod:`advimage.pipelines` names pipelines (``pil-bicubic``, ``bilg``,
``cv2-area+jpeg:90``, ...), with three more names that stay as rows have always recorded them:

* ``pil`` / ``float``: the victim's own eval resize with the model's interpolation f, on a PIL
  image (``pil-<f>``) or on the float tensor (``torch-<f>``); :meth:`Plan.spec` gives the
  pipeline once the model's config is known (``--victim`` is thus a set of pipelines);
* ``model``: the pixels as they are (``size='model'``: the file is the model's input);
* ``file``: a regressor's score of the file (App. A).

An empty path tuple means the model itself, without a resize in front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from .attacks import spec as attack_spec
from .attacks.registry import AttackSpec
from .quantize import names as quantizer_names
from .quantize import spec as quantizer_spec

SIZES = ("native", "model")
VICTIMS = ("both", "pil", "float", "pil+both")
#: the victim's two eval resizes, named as rows record them (module docstring)
VICTIM_PATHS = ("pil", "float")


class SettingsLike(Protocol):
    """What :func:`resolve` reads of :class:`~advimage.engine.Settings` (its fields, normalized:
    ``auto`` quantizer and default margin already chosen, ``victims`` already canonical)."""

    attack: str
    steps: int
    quantizers: tuple[str, ...]
    df: float | None
    quality: int | None
    target: int | None
    size: str
    victim: str
    downscaler: str | None
    seed: int
    attack_params: dict[str, Any]
    quantizer_steps: int
    margin: float | None
    ensemble: str | None
    crop_pct: float | None
    target_score: float | None
    precision: str
    channels_last: bool
    compile: bool
    victims: tuple[str, ...] | str | None
    aggregation: str
    share: float
    jpeg_backward: str | None


@dataclass(frozen=True)
class Plan:
    """What the engine does to every image of a run (see the module docstring for path names).

    attack, attack_kwargs: the registered attack and the keyword arguments of its run (its
    hyperparameters, ``seed`` for seeded attacks); black_box, labels_only: its registry entry.
    quantizers: the quantizer specs, one row each (``auto`` already chosen); df, quality,
    quantizer_steps: their options (:meth:`quantizer_options`). margin: κ the quantized file
    must reach on every quantizer path (logit units; score units for a regressor).
    attack_paths: the pipelines the attack goes through, combined by ``aggregation``;
    quantizer_paths: those the quantizer's λ search must fool (and the originals' check runs
    through), combined by ``quantizer_aggregation``; verify_paths: those each file is verified
    through (the row's ``verified_paths`` keys); main_path: the one whose prediction is the row's
    ``adversarial_label``. share: the tolerance under which near-identical attack pipelines share
    one member. jpeg_backward: the gradient of the ``+jpeg:Q`` pipelines' re-encode (identity, BPDA's
    usual choice, or cubic: :func:`advimage.jpeg.transform.soft_roundtrip`). one_member_max: the
    ``max`` gradient backpropagates the member attaining the max
    only (``--victims``); otherwise every member at once, as the ``--victim`` / ``--ensemble``
    spellings always did. Budget: ``steps`` of the attack's unit = ``attack_steps`` +
    ``quantizer_gradients`` (white box) or + ``overhead_queries`` (black box: the originals' check
    and the quantizer's forwards, each through ``query_paths`` paths).
    """

    attack: str
    attack_kwargs: dict[str, Any]
    black_box: bool
    labels_only: bool
    targeted: bool
    regression: bool
    size: str
    quantizers: tuple[str, ...]
    df: float
    quality: int
    quantizer_steps: int
    margin: float
    attack_paths: tuple[str, ...]
    aggregation: str
    quantizer_paths: tuple[str, ...]
    quantizer_aggregation: str
    verify_paths: tuple[str, ...]
    main_path: str
    share: float
    crop_pct: float | None
    one_member_max: bool
    jpeg_backward: str
    steps: int
    attack_steps: int
    quantizer_gradients: int
    query_paths: int
    overhead_queries: int

    def quantizer_options(self, name: str, targeted: bool | None = None) -> dict[str, Any]:
        """The options the engine passes quantizer ``name``: only those it takes."""
        qs = quantizer_spec(name)
        out: dict[str, Any] = {"targeted": self.targeted if targeted is None else targeted} \
            if "targeted" in qs.options else {}
        if "steps" in qs.options:
            out["steps"] = self.quantizer_steps
        if qs.uses_df:
            out["df"] = self.df
        if qs.uses_quality:
            out["quality"] = self.quality
        return out

    @staticmethod
    def spec(path: str, config: Any) -> str:
        """The pipeline spec of a path for a model of ``config``: ``pil`` / ``float`` become the
        model's own interpolation through Pillow / torchvision, a pipeline name stays itself."""
        if path in VICTIM_PATHS:
            from .models.protocol import victim_method
            return victim_method(config, path)
        return path

    def specs(self, paths: tuple[str, ...], config: Any) -> tuple[str, ...]:
        """:meth:`spec` of each path."""
        return tuple(self.spec(p, config) for p in paths)


def default_margin(target_score: float | None) -> float:
    """The margin where none is given: the noise margin for a classifier, 0 for a regressor."""
    from .criteria import NOISE_MARGIN
    return 0.0 if target_score is not None else NOISE_MARGIN


def default_jpeg_backward(victims: Sequence[str] | None, black_box: bool) -> str:
    """The ``+jpeg:Q`` re-encode's gradient where none is given: ``cubic`` (JPEG's own DCT rounding,
    smoothed) where a gradient goes through such a victim, which costs less distortion than BPDA's
    identity (docs/results.md, issue 24), else ``identity`` (nothing to shape)."""
    from .pipelines import parse

    if black_box or not victims or not any(parse(v).jpeg is not None for v in victims):
        return "identity"
    return "cubic"


def check_df(df: float | None) -> float:
    """``df`` as a float, 1 where not given (Ch. 7's default); raises ``ValueError`` unless it is a
    non-negative integer or inf."""
    value = 1.0 if df is None else float(df)
    if not (math.isinf(value) or (value >= 0 and value == int(value))):
        raise ValueError(f"df must be a non-negative integer or inf, got {df}")
    return value


def resolve(s: SettingsLike) -> Plan:
    """Check settings ``s`` and resolve them into a :class:`Plan`. Raises ``ValueError`` (or the
    registries' ``KeyError`` for an unknown attack or quantizer) naming what is valid."""
    a = attack_spec(s.attack)  # unknown names raise with the valid ones
    for q in s.quantizers:
        quantizer_spec(q)
    if not s.quantizers:
        raise ValueError("at least one quantizer is needed")
    _refuse_ignored_options(s, a)
    a.settings(**s.attack_params)  # unknown hyperparameters raise
    if s.size not in SIZES:
        raise ValueError(f"unknown size {s.size!r}; valid: {', '.join(SIZES)}")
    if s.victim not in VICTIMS:
        raise ValueError(f"unknown victim {s.victim!r}; valid: {', '.join(VICTIMS)}")
    if s.steps < 1:
        raise ValueError("steps must be >= 1")
    margin = default_margin(s.target_score) if s.margin is None else s.margin
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    quality = 90 if s.quality is None else int(s.quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {s.quality}")
    df = check_df(s.df)
    if s.downscaler is not None:
        from .resize import RESIZE_METHODS
        if s.downscaler not in RESIZE_METHODS:
            raise ValueError(f"unknown downscaler {s.downscaler!r}; valid: {', '.join(RESIZE_METHODS)}")
    if s.ensemble is not None:
        from .models.protocol import AGGREGATIONS
        if s.ensemble not in AGGREGATIONS:
            raise ValueError(f"unknown ensemble aggregation {s.ensemble!r}; valid: {', '.join(AGGREGATIONS)}")
        if s.size != "native" or s.downscaler is not None or a.black_box:
            raise ValueError("an ensemble (the six downscalers of thesis §9.3) needs size='native', no "
                             "downscaler and a gradient attack")
    if s.crop_pct is not None and not 0 < s.crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {s.crop_pct}")
    if s.target_score is not None:
        if not math.isfinite(s.target_score):
            raise ValueError(f"target_score must be a finite number, got {s.target_score}")
        if s.target is not None:
            raise ValueError("a target class and a target score exclude each other (a target class does not "
                             "apply to a regressor)")
        if a.black_box or a.labels_only:
            raise ValueError(f"attack {s.attack!r} needs class labels; a regressor's score needs a gradient "
                             "attack that accepts any criterion (fgsm, ifgsm, pgd, cw, bp)")
        if s.size != "native" or s.ensemble is not None or s.downscaler is not None:
            raise ValueError("a regressor is attacked at native size, without downscaler or ensemble")
    if s.victims is not None:
        _check_victims(s)
    _check_jpeg_backward(s, a)
    from .models.fast import PRECISIONS
    if s.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {s.precision!r}; valid: {', '.join(PRECISIONS)}")
    if (s.precision != "fp32" or s.channels_last or s.compile) and s.target_score is not None:
        raise ValueError("precision, channels_last and compile apply to classifiers, not to a regressor")

    attack_paths, aggregation, quantizer_paths, quantizer_aggregation, verify_paths, main_path = _paths(s, a)
    quantizer_gradients = 0 if a.black_box else max(quantizer_spec(q).gradients for q in s.quantizers)
    query_paths = max(1, len(quantizer_paths))
    forwards = max(quantizer_spec(q).max_forwards(s.quantizer_steps) for q in s.quantizers)
    overhead_queries = query_paths * (1 + forwards)
    attack_steps = s.steps - (overhead_queries if a.black_box else quantizer_gradients)
    if not a.black_box and s.steps <= quantizer_gradients:
        raise ValueError(f"steps must exceed the quantizer's {quantizer_gradients} gradient(s)")
    if a.black_box and attack_steps < 1:
        raise ValueError(f"steps must exceed the {overhead_queries} queries of the originals' check and "
                         f"the quantizer's search (black box: every model call is a query)")
    kwargs = dict(s.attack_params)
    if a.seeded:
        kwargs["seed"] = s.seed
    return Plan(attack=s.attack, attack_kwargs=kwargs, black_box=a.black_box, labels_only=a.labels_only,
                targeted=s.target is not None, regression=s.target_score is not None, size=s.size,
                quantizers=tuple(s.quantizers), df=df, quality=quality, quantizer_steps=s.quantizer_steps,
                margin=margin, attack_paths=attack_paths, aggregation=aggregation, quantizer_paths=quantizer_paths,
                quantizer_aggregation=quantizer_aggregation, verify_paths=verify_paths, main_path=main_path,
                share=float(s.share) if s.victims else 0.0, crop_pct=s.crop_pct, one_member_max=bool(s.victims),
                jpeg_backward=s.jpeg_backward or "identity",
                steps=s.steps, attack_steps=attack_steps, quantizer_gradients=quantizer_gradients,
                query_paths=query_paths, overhead_queries=overhead_queries)


def _paths(s: SettingsLike, a: AttackSpec) -> tuple[tuple[str, ...], str, tuple[str, ...], str, tuple[str, ...], str]:
    """(attack paths, their aggregation, quantizer paths, theirs, verification paths, main path)."""
    if s.size == "model":
        return (), "max", (), "max", ("model",), "model"
    if s.target_score is not None:
        return (), "max", (), "max", ("file",), "file"
    if s.victims:
        victims = tuple(s.victims)
        # an attack that needs labels sees one pipeline's (N, C) logits
        attack = victims[:1] if a.labels_only or a.black_box else victims
        return attack, s.aggregation, victims, "max", victims, victims[0]
    if s.ensemble:
        from .resize import DOWNSCALERS
        return DOWNSCALERS, s.ensemble, DOWNSCALERS, s.ensemble, DOWNSCALERS, DOWNSCALERS[0]
    if s.downscaler:
        return (s.downscaler,), "max", (s.downscaler,), "max", (s.downscaler,), s.downscaler
    both = ("pil", "float")
    if s.victim == "both":
        return both, "max", both, "max", ("float", "pil"), "pil"
    if s.victim == "pil+both":
        return ("pil",), "max", both, "max", ("float", "pil"), "pil"
    return (s.victim,), "max", (s.victim,), "max", ("float", "pil"), "pil"


def _check_victims(s: SettingsLike) -> None:
    from .models.protocol import AGGREGATIONS

    if s.size != "native" or s.target_score is not None:
        raise ValueError("victims (deployed pipelines) apply to a classifier at native size")
    if s.downscaler is not None or s.ensemble is not None or s.victim != "pil+both":
        raise ValueError("victims replace victim, downscaler and ensemble (each is a pipeline or a set of "
                         "them: see `advimage pipelines`); give victims alone")
    if s.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {s.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if not (0 <= s.share and math.isfinite(s.share)):
        raise ValueError(f"share must be a finite tolerance >= 0, got {s.share}")


def _check_jpeg_backward(s: SettingsLike, a: AttackSpec) -> None:
    """jpeg_backward is a known name, and a gradient goes through a ``+jpeg:Q`` pipeline of victims."""
    from .pipelines import JPEG_BACKWARDS, parse

    if s.jpeg_backward is None:  # Settings resolve it before planning
        return
    if s.jpeg_backward not in JPEG_BACKWARDS:
        raise ValueError(f"unknown jpeg_backward {s.jpeg_backward!r}; valid: {', '.join(JPEG_BACKWARDS)}")
    if s.jpeg_backward == "identity":
        return
    if not s.victims or not any(parse(v).jpeg is not None for v in s.victims):
        raise ValueError(f"jpeg_backward {s.jpeg_backward!r} is the gradient of a '+jpeg:Q' pipeline: give victims "
                         "with one (e.g. victims='common')")
    if a.black_box:
        raise ValueError(f"jpeg_backward {s.jpeg_backward!r} shapes gradients; attack {s.attack!r} is black box")


def _refuse_ignored_options(s: SettingsLike, a: AttackSpec) -> None:
    """An option that no chosen quantizer, attack or path would use is an error, not a no-op."""
    specs = [quantizer_spec(q) for q in s.quantizers]
    names = ", ".join(s.quantizers)
    for option, value, used in (("df", s.df, [q.uses_df for q in specs]),
                                ("quality", s.quality, [q.uses_quality for q in specs])):
        if value is not None and not any(used):
            users = [n for n in quantizer_names() if getattr(quantizer_spec(n), f"uses_{option}")]
            raise ValueError(f"{option} applies to the quantizers {', '.join(users)}; {names} "
                             f"do(es) not use it")
    if a.black_box:
        needs = [q.name for q in specs if q.gradients > 0]
        if needs:
            free = [n for n in quantizer_names() if quantizer_spec(n).gradients == 0]
            raise ValueError(f"attack {s.attack!r} is black box (no gradient): quantizer(s) {', '.join(needs)} "
                             f"need gradients; choose among {', '.join(free)}")
    if s.victim == "both" and a.labels_only:
        raise ValueError(f"victim 'both' (a worst-path loss over two paths) needs an attack that accepts any "
                         f"criterion; {s.attack!r} needs labels: use victim 'pil+both' (the attack through PIL, "
                         f"the quantizer through both paths)")
    if (s.downscaler or s.ensemble) and s.victim in ("both", "float"):
        raise ValueError(f"victim {s.victim!r} does not apply with a downscaler or an ensemble (they replace "
                         f"the victim's resize)")
