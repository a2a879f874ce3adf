"""The one engine from files to verified files.

read → label → attack → quantize → encode → decode → verify, for a batch of image files, as a
*pure* worker (:func:`run_batch`: no file is written; rows carry the encoded bytes) and a
driver that commits (:func:`write_outputs`, :func:`attack_files`). ``advimage attack``,
``advimage demo``, ``advimage bench`` and the experiments all call :func:`run_batch`.

Sizes (``Settings.size``):

* ``native`` (default): the attack and the quantizer work on the file's own pixels, through the
  model's eval transform as a differentiable layer (a pipeline front of :mod:`advimage.pipelines`,
  thesis Ch. 9 Scenario B); the written file has the original's size. ``victim`` picks the
  transform the attack goes through: ``pil`` (Pillow's 8-bit resize, reproduced exactly),
  ``float`` (torchvision's float resize), ``both`` (the two at once, worst-path loss, success only
  when both are fooled) or ``pil+both`` (default: the attack through ``pil``, the quantizer through
  both). Files are verified through *both* real pipelines (:mod:`advimage.verify`), and
  ``verified`` requires both. ``downscaler``, ``ensemble`` and ``victims`` name other pipelines.
* ``model``: the original is resized and centre-cropped first (Scenario A); the file has the
  model's input size and is verified as it is.

What is done is resolved once from the settings into a frozen :class:`~advimage.plan.Plan`
(``Settings.plan``: the attack, the quantizers, the pipelines of the attack, the quantizer and the
verification, the budget split); the functions here read it.

Budget: ``steps`` is what the attack's registry entry counts (gradients for white-box attacks,
queries for black-box ones). For white-box attacks it covers the quantizer too: the attack gets
``steps`` minus the quantizer's gradients, so reported gradients never exceed ``steps``.
Forward passes are counted and reported, not capped (except each quantizer's own λ search).

Conventions: an original that already satisfies the criterion (misclassified, or already the
target) is not attacked: status ``misclassified``, distortion 0, no file (thesis §6.2.4). A file
is written only when it is verified; a failed image keeps its row (status ``failed``) and the
bytes of the best attempt in ``data`` for whoever wants them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from . import codec, verify
from .attacks import spec as attack_spec
from .criteria import AllPaths, Margin, Misclassification, ScoreBelow, TargetedMisclassification
from .data import ImageItem, check_labels, check_target
from .distortion import distortion, psnr
from .images import ImageReadError, load_for_model, read_image
from .models.fast import fast_classifier
from .models.protocol import MultiPathClassifier
from .pipelines import PipelineClassifier, classify_input
from .plan import Plan, default_jpeg_backward, default_margin
from .plan import resolve as resolve_plan
from .quantize import AUTO, default_quantizer
from .quantize import spec as quantizer_spec

STATUSES = ("fooled", "failed", "misclassified", "error")


@dataclass(frozen=True)
class Settings:
    """What the engine does to every image (all of it enters :meth:`identity`).

    attack: registered attack; steps: its budget (see the module docstring); quantizers: one or
    more registered quantizers applied to the same attack output (one row each); ``auto`` (default)
    becomes :func:`~advimage.quantize.default_quantizer`'s choice for this attack and budget; df, quality:
    quantizer options; target: class index for a targeted attack; size: ``native`` or ``model``;
    victim: native size, the resize the attack and the quantizer go through: ``pil+both``
    (default: the attack through ``pil``, one network pass per step, the quantizer through both
    paths), ``both`` (the PIL and the float paths at once, success only when both are fooled;
    attacks that need labels, such as DDN and SurFree, take ``pil+both`` instead), ``pil`` or
    ``float``; downscaler: override of the resize method (a name
    of :data:`advimage.resize.RESIZE_METHODS`); seed: torch seed and the attack's ``seed``;
    attack_params: extra attack hyperparameters; quantizer_steps: forward budget of each
    quantizer's λ search (smart: λ values tried after the check of x0; jpeg: n, n + 1 values);
    margin: κ ≥ 0 in logit units that the quantized image must reach (L_adv ≤ −κ on every attacked
    path, :class:`~advimage.criteria.Margin`); files are still verified without it. None (default):
    :data:`~advimage.criteria.NOISE_MARGIN` for a classifier (room for another machine's rounding),
    0 for a regressor; 0 is the thesis's exact protocol (files on the boundary).
    target_score: the model is a regressor (:mod:`advimage.models.regressors`) and the file must
    rate worse than this score (:class:`~advimage.criteria.ScoreBelow`, thesis App. A): below it
    for a higher-is-better score; at native size only, through a gradient attack; the margin is
    then in score units.
    precision (``fp32`` or ``bf16`` autocast), channels_last, compile (``torch.compile``): faster
    passes for the attack (:mod:`advimage.models.fast`); the originals' check, the quantizer and
    the files' verification stay in fp32 with the model as loaded (bf16 floats that fool bf16 passes
    mostly do not fool fp32 ones: docs/results.md).
    victims (deployed pipelines of :mod:`advimage.pipelines`, a set name or specs), aggregation,
    share: see :class:`~advimage.plan.Plan`; jpeg_backward: the gradient of the victims' ``+jpeg:Q``
    re-encode (``identity``, BPDA's straight-through, or ``cubic``:
    :func:`~advimage.jpeg.transform.soft_roundtrip` at 4:2:0); ``None`` resolves to ``cubic`` where
    a gradient attack goes through a ``+jpeg:Q`` victim (1.37x the default's distortion instead of
    1.63x for ``victims="common"``: docs/results.md), else ``identity``.
    """

    attack: str = "bp"
    steps: int = 100
    quantizers: tuple[str, ...] = (AUTO,)
    df: float | None = None
    quality: int | None = None
    target: int | None = None
    size: str = "native"
    victim: str = "pil+both"
    downscaler: str | None = None
    seed: int = 0
    attack_params: dict[str, Any] = field(default_factory=dict)
    quantizer_steps: int = 10
    margin: float | None = None
    ensemble: str | None = None
    crop_pct: float | None = None
    target_score: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    victims: tuple[str, ...] | str | None = None
    aggregation: str = "max"
    share: float = 0.1
    jpeg_backward: str | None = None

    def __post_init__(self) -> None:
        a = attack_spec(self.attack)  # unknown names raise with the valid ones
        if AUTO in self.quantizers:  # resolved here, so settings and stores record the quantizer used
            chosen = default_quantizer(a.black_box, self.steps)
            object.__setattr__(self, "quantizers", tuple(chosen if q == AUTO else q for q in self.quantizers))
        if self.margin is None:  # resolved here, so that settings and stores record the margin used
            object.__setattr__(self, "margin", default_margin(self.target_score))
        if self.victims is not None:  # canonical spec strings, recorded as such
            from .pipelines import resolve as resolve_pipelines
            object.__setattr__(self, "victims", resolve_pipelines(self.victims))
        if self.jpeg_backward is None:  # resolved here, so that settings and stores record the backward used
            object.__setattr__(self, "jpeg_backward", default_jpeg_backward(self.victims, a.black_box))
        # every check, and everything derived, once (advimage.plan)
        object.__setattr__(self, "_plan", resolve_plan(self))

    @property
    def plan(self) -> Plan:
        """The :class:`~advimage.plan.Plan` these settings resolve to (computed at construction)."""
        return self._plan  # type: ignore[attr-defined, no-any-return]

    @property
    def df_value(self) -> float:
        """``df``, 1 where not given (Ch. 7's default)."""
        return 1.0 if self.df is None else float(self.df)

    @property
    def quality_value(self) -> int:
        """``quality``, 90 where not given."""
        return 90 if self.quality is None else int(self.quality)

    def quantizer_options(self, name: str, targeted: bool = False) -> dict[str, Any]:
        """The options the engine passes quantizer ``name``: only those it takes."""
        return self.plan.quantizer_options(name, targeted)

    @property
    def query_paths(self) -> int:
        """Model calls per image in one forward of the quantizer's classifier (the paths it checks)."""
        return self.plan.query_paths

    @property
    def overhead_queries(self) -> int:
        """Black box: the queries a row spends outside the attack, at most: the originals' check and
        the quantizer's forwards, each through every checked path."""
        return self.plan.overhead_queries

    @property
    def fast(self) -> bool:
        """Whether the attack's passes differ from the model's as loaded (fp32)."""
        return self.precision != "fp32" or self.channels_last or self.compile

    @property
    def quantizer_gradients(self) -> int:
        return self.plan.quantizer_gradients

    @property
    def attack_steps(self) -> int:
        """The attack's own budget: ``steps`` less the quantizer's gradients (white box), less the
        originals' check and the quantizer's queries (black box, :attr:`overhead_queries`)."""
        return self.plan.attack_steps

    @property
    def effective_victim(self) -> str:
        """The victim's resize, or ``pil`` with a downscaler, ``ensemble`` with an ensemble (other
        combinations are refused at construction)."""
        if self.downscaler:
            return "pil"
        if self.ensemble:
            return "ensemble"
        return self.victim

    def identity(self) -> dict[str, Any]:
        """Everything that determines the rows (for a store's settings hash): attack with its
        effective hyperparameters and budget unit, quantizers and their options, size, victim."""
        a = attack_spec(self.attack)
        out: dict[str, Any] = {
            "attack": self.attack, "attack_params": a.settings(**self.attack_params), "budget": self.steps,
            "budget_unit": a.budget, "black_box": a.black_box, "seed": self.seed, "targeted": self.target is not None,
            "target": self.target, "size": self.size,
            "quantizers": [quantizer_spec(q).settings(self.df_value, self.quality_value)
                           for q in self.quantizers], "quantizer_steps": self.quantizer_steps,
            "margin": self.margin,
        }
        if a.black_box:  # every model call of a row is a query (earlier stores counted the attack's alone)
            out["queries_counted"] = "attack+originals+quantizer"
        if self.fast:  # only when set, so that the stores of earlier runs keep their hash
            out["passes"] = dict(precision=self.precision, channels_last=self.channels_last, compile=self.compile)
        if self.target_score is not None:
            out["target_score"] = self.target_score
        elif self.victims:  # only when set, so that the stores of earlier runs keep their hash
            out.update(victims=list(self.victims), aggregation=self.aggregation, share=self.share,
                       crop_pct=self.crop_pct)
            if self.jpeg_backward != "identity":  # only when set, so that earlier stores keep their hash
                out["jpeg_backward"] = self.jpeg_backward
        elif self.size == "native":
            out.update(victim=self.effective_victim, downscaler=self.downscaler)
            if self.ensemble is not None or self.crop_pct is not None:
                out.update(ensemble=self.ensemble, crop_pct=self.crop_pct)
        return out

    @property
    def verification_paths(self) -> tuple[str, ...]:
        """Where files are verified: ``model`` at model size; at native size the victim's PIL and
        float resizes, or the attacked downscaler(s) when ``downscaler`` / ``ensemble`` is set."""
        return self.plan.verify_paths

    def model_config(self, config):
        """The model's config with ``crop_pct`` overridden where asked."""
        import dataclasses

        return config if self.crop_pct is None else dataclasses.replace(config, crop_pct=self.crop_pct)


@dataclass
class Row:
    """One image × quantizer, as verified on the encoded file (pixels in [0, 255]).

    status: fooled | failed | misclassified | error. distortion: eq. 6.2 of the file against the
    original at the file's size; distortion_model: the same at the model's input (both through
    torchvision's float eval transform) for native-size runs; compression_distortion: the plain
    JPEG of the original at ``quality`` (JPEG runs: most of d is the compression itself).
    verified: the file satisfies the criterion on every verification path; verified_paths: per
    path (``model``, ``float``, ``pil``; ``file`` for a regressor). file_margin: by how much (logit
    units) the file beats the criterion on its worst verification path (−loss; < 0: not fooled):
    the room it leaves to numerical noise (``Settings.margin``). original_score, score,
    target_score: a regressor's score of the original and of the file, and the target
    (labels are then None). seconds: the batch's wall time divided by its images.
    data: the file bytes (not in :meth:`to_dict`); output: the written path, once written.
    """

    file: str
    key: str
    quantizer: str = ""
    status: str = "error"
    label: int | None = None
    label_source: str = ""
    label_name: str = ""
    target: int | None = None
    original_prediction: int | None = None
    adversarial_label: int | None = None
    adversarial_name: str = ""
    width: int | None = None
    height: int | None = None
    original_score: float | None = None
    score: float | None = None
    target_score: float | None = None
    distortion: float | None = None
    psnr: float | None = None
    distortion_model: float | None = None
    compression_distortion: float | None = None
    attack_success: bool | None = None
    attack_distortion: float | None = None
    quantize_success: bool | None = None
    lam: float | None = None
    gradients: int = 0
    forwards: int = 0
    queries: int = 0
    verified: bool = False
    verified_paths: dict[str, bool | None] = field(default_factory=dict)
    file_margin: float | None = None
    seconds: float = 0.0
    suffix: str = ""
    output: str | None = None
    error: str | None = None
    data: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: no bytes; non-finite floats become None (PSNR of an unchanged file: None)."""
        d = asdict(self)
        d.pop("data")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _num(x: Tensor | float | None) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _with_passes(model, settings: Settings):
    """``model`` with the settings' precision, memory format and compilation (itself by default)."""
    return fast_classifier(model, precision=settings.precision, channels_last=settings.channels_last,
                           compile=settings.compile)


def attacked_model(model, settings: Settings, fast: bool = True):
    """The classifier the attack goes through: the model itself at model size, the model behind
    the plan's attack pipelines at native size (:func:`paths_model`); with ``fast``, the network
    runs with the settings' precision, memory format and compilation."""
    plan = settings.plan
    if fast:
        model = _with_passes(model, settings)
    if plan.one_member_max and plan.labels_only:  # --victims: the attack sees one pipeline's (N, C) logits
        return single_pipeline(model, plan.attack_paths[0], plan.crop_pct, plan.jpeg_backward)
    return paths_model(model, plan, plan.attack_paths, plan.aggregation, plan.share)


def paths_model(model, plan: Plan, paths: tuple[str, ...], aggregation: str = "max", share: float = 0.0):
    """``model`` behind ``paths`` (names of :class:`~advimage.plan.Plan`, as pipelines of
    :mod:`advimage.pipelines`): itself for none; one pipeline's front (logits (N, C)) for one path
    of the ``--victim`` / ``--downscaler`` spellings; else a
    :class:`~advimage.pipelines.PipelineClassifier` (logits (N, P, C)), whose ``max`` gradient
    runs through one member for ``--victims`` and through all of them for the older spellings."""
    if not paths:
        return model
    specs = plan.specs(paths, model.config)
    if len(specs) == 1 and not plan.one_member_max:
        return single_pipeline(model, specs[0], plan.crop_pct, plan.jpeg_backward)
    return PipelineClassifier(model, specs, aggregation=aggregation, crop_pct=plan.crop_pct, share=share,
                              one_member_max=plan.one_member_max, jpeg_backward=plan.jpeg_backward)


def single_pipeline(model, spec: str, crop_pct: float | None = None, jpeg_backward: str = "identity"):
    """``model`` behind one pipeline's front, in its precision: (N, 3, H, W) -> logits (N, C)
    (``jpeg_backward``: the gradient of a ``+jpeg:Q`` stage, :data:`~advimage.pipelines.JPEG_BACKWARDS`)."""
    from .models.protocol import WrappedClassifier
    from .pipelines import parse

    p = parse(spec)
    return WrappedClassifier(fast_classifier(model, precision=p.precision),
                             p.front(model.config, crop_pct, jpeg_backward))


def attacked_cache(settings: Settings):
    """:func:`attacked_model` for ``settings`` as an executor's per-worker cache entry
    (:class:`advimage.distributed.Cached`): each worker builds it once per loaded model."""
    from functools import partial

    from .distributed import Cached

    return Cached(key=repr(sorted(settings.identity().items())), build=partial(attacked_model, settings=settings))


def quantizer_model(model, settings: Settings, attacked, fast: bool = True):
    """The classifier the quantizer goes through: the attack's where the plan's quantizer paths
    are the attack's, else the model behind the quantizer paths (both paths for ``pil+both``,
    every pipeline of ``--victims``)."""
    plan = settings.plan
    if plan.quantizer_paths == plan.attack_paths and plan.quantizer_aggregation == plan.aggregation \
            and not plan.one_member_max:
        return attacked
    if fast:
        model = _with_passes(model, settings)
    return paths_model(model, plan, plan.quantizer_paths, plan.quantizer_aggregation)


def verification_paths(settings: Settings) -> tuple[str, ...]:
    return settings.plan.verify_paths


def _read(item: ImageItem, config, settings: Settings) -> Tensor:
    """The original pixels the attack starts from; config: the model's :class:`ModelConfig`."""
    if settings.size == "model":
        return load_for_model(item.path, config, item.data)
    return read_image(item.path, item.data)


def check_item_labels(items: Iterable[ImageItem], config: Any, settings: Settings) -> None:
    """Refuse (:class:`~advimage.data.LabelError`) a label, or the settings' target class, outside
    the classes of the model of ``config``; a regressor's items are not checked (it does not use
    their labels, and a target score excludes a target class)."""
    num_classes = getattr(config, "num_classes", None)
    if num_classes is not None and settings.target_score is None:
        check_target(settings.target, num_classes, getattr(config, "name", None))
        check_labels(items, num_classes, getattr(config, "name", None))


def run_batch(model, items: Sequence[ImageItem], settings: Settings, keys: Sequence[str] | None = None,
              *, attacked=None) -> list[Row]:
    """Attack, quantize, encode and verify a batch of image files; nothing is written.

    model: a classifier at its own resolution (see :mod:`advimage.models.protocol`). keys: names
    of the images in the rows (default: the paths). attacked: the classifier to attack, if not
    :func:`attacked_model` (e.g. a cached one). Returns one row per (item, quantizer), items in
    order; unreadable files become ``error`` rows. A label, or the target class, outside the
    model's classes raises :class:`~advimage.data.LabelError`.
    """
    check_item_labels(items, model.config, settings)
    t0 = time.perf_counter()
    keys = list(keys) if keys is not None else [str(it.path) for it in items]
    attacked = attacked if attacked is not None else attacked_model(model, settings)
    rows: dict[int, list[Row]] = {}
    groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = {}
    for i, item in enumerate(items):
        try:
            x = _read(item, model.config, settings)
        except ImageReadError as exc:
            rows[i] = [Row(file=str(item.path), key=keys[i], quantizer=q, label=item.label, error=str(exc))
                       for q in settings.quantizers]
            continue
        groups.setdefault(tuple(x.shape), []).append((i, x))
    for members in groups.values():  # native sizes differ: one attack call per size
        idx = [i for i, _ in members]
        out = _run_group(model, attacked, [items[i] for i in idx], [keys[i] for i in idx],
                         torch.stack([x for _, x in members]), settings)
        for i, r in zip(idx, out):
            rows[i] = r
    seconds = (time.perf_counter() - t0) / max(1, len(items))
    flat = [r for i in range(len(items)) for r in rows[i]]
    for r in flat:
        r.seconds = seconds
    return flat


def _run_group(model, attacked, items: list[ImageItem], keys: list[str], x0_u8: Tensor,
               settings: Settings) -> list[list[Row]]:
    dev = model.device
    x0 = x0_u8.to(dev).float()
    n = x0.shape[0]
    # faster passes serve the attack only: the originals' check and the quantizer, whose forwards
    # decide which file is written, run with the model as loaded (fp32), as the verification does
    qmodel = (quantizer_model(model, settings, attacked_model(model, settings, fast=False), fast=False)
              if settings.fast else quantizer_model(model, settings, attacked))
    logits0 = _logits(qmodel, x0)
    plan = settings.plan
    targeted, regression = plan.targeted, plan.regression
    base_rows = [dict(file=str(it.path), key=key, height=int(x0.shape[-2]), width=int(x0.shape[-1]))
                 for it, key in zip(items, keys)]
    if regression:  # thesis App. A: the file must rate worse than the target score
        crit = ScoreBelow(torch.full((n,), float(settings.target_score), device=dev),
                          higher_is_better=bool(model.higher_is_better))
        for j, b in enumerate(base_rows):
            b.update(label=items[j].label, target_score=settings.target_score,
                     original_score=_num(ScoreBelow._scores(logits0)[j]))
    else:
        pred0 = (logits0[:, 0] if logits0.ndim == 3 else logits0).argmax(1)  # several paths: the first (PIL)
        labels = torch.tensor([it.label if it.label is not None else int(p) for it, p in zip(items, pred0)],
                              dtype=torch.long, device=dev)
        crit = (TargetedMisclassification(torch.full_like(labels, settings.target)) if targeted
                else Misclassification(labels))
        for j, (it, b) in enumerate(zip(items, base_rows)):
            b.update(label=int(labels[j]), label_source="file" if it.label is not None else "model",
                     label_name=model.class_name(int(labels[j])), target=settings.target,
                     original_prediction=int(pred0[j]))
    attack_crit = per_path = crit
    paths = logits0.ndim == 3  # several victim paths: every one must be fooled

    def quant_crit_of(name: str):
        """The quantizer's criterion: the run's margin, or the quantizer's own ``+margin:κ``."""
        kappa = plan.margin if quantizer_spec(name).margin is None else quantizer_spec(name).margin
        out = Margin(per_path, kappa) if kappa > 0 else per_path
        return AllPaths(out) if paths else out

    if paths:
        crit = AllPaths(crit)
        if isinstance(attacked, PipelineClassifier):  # one member per group of near-identical pipelines
            attacked = attacked.shared(tuple(x0.shape[-2:]))
        if isinstance(attacked, (MultiPathClassifier, PipelineClassifier)):  # the attack goes through paths
            attack_crit = crit
    already = crit.success(logits0)
    todo = (~already).nonzero().flatten()
    result: list[list[Row]] = [[] for _ in range(n)]
    for j in already.nonzero().flatten().tolist():  # already adversarial: not attacked
        done = dict(score=base_rows[j]["original_score"]) if regression else dict(
            adversarial_label=int(pred0[j]), adversarial_name=model.class_name(int(pred0[j])))
        for q in plan.quantizers:
            result[j].append(Row(**base_rows[j], **done, quantizer=q,
                                 status="misclassified", distortion=0.0, verified=True, forwards=1,
                                 queries=plan.query_paths if plan.black_box else 0))
    if not todo.numel():
        return result
    sub = crit.subset(todo)
    xs, xs_u8 = x0[todo], x0_u8[todo]
    x_start = xs
    compression: Tensor | None = None
    if "jpeg" in plan.quantizers:
        from .jpeg.io import compress
        # thesis §7.4.1: the attack starts from the JPEG-compressed original
        plain = compress(xs_u8.cpu(), plan.quality).to(dev).float()
        compression = distortion(plain, xs)
        if all(q == "jpeg" for q in plan.quantizers):
            x_start = plain
    torch.manual_seed(settings.seed)
    res = attack_spec(plan.attack).run(attacked, x_start, attack_crit.subset(todo), steps=plan.attack_steps,
                                       targeted=targeted, **plan.attack_kwargs)
    for q in plan.quantizers:
        qname = q
        qs = quantizer_spec(qname)
        qr = qs.run(qmodel, xs, res.x_adv, quant_crit_of(qname).subset(todo), **plan.quantizer_options(qname))
        for m, j in enumerate(todo.tolist()):
            data = qr.encode(m)
            row = Row(**base_rows[j], quantizer=qname, suffix=qs.suffix, data=data,
                      attack_success=bool(res.success[m]), attack_distortion=_num(res.distortion[m]),
                      quantize_success=bool(qr.success[m]), lam=_num(qr.lam[m]),
                      gradients=int(res.gradients[m]) + int(qr.gradients[m]),
                      forwards=1 + int(res.forwards[m]) + int(qr.forwards[m]),
                      queries=_queries(plan, int(res.queries[m]), int(qr.forwards[m])),
                      compression_distortion=None if compression is None or qname != "jpeg"
                      else _num(compression[m]))
            _check_budget(row, plan)
            one = _plain(sub).subset(torch.tensor([m], device=dev))
            if regression:
                _verify_score(row, model, x0_u8[j], one)
            else:
                _verify(row, model, x0_u8[j], one, settings)
            result[j].append(row)
    return result


def _queries(plan: Plan, attack_queries: int, quantizer_forwards: int) -> int:
    """A row's label queries: for black-box attacks every model call (the attack's, the originals'
    check and the quantizer's forwards, each through every checked path); 0 for white-box rows."""
    if not plan.black_box:
        return attack_queries
    return attack_queries + plan.query_paths * (1 + quantizer_forwards)


def _check_budget(row: Row, plan: Plan) -> None:
    """A row never spends more than ``steps`` of its budget unit; anything else is a bug here."""
    spent = row.queries if plan.black_box else row.gradients
    if spent > plan.steps:
        raise RuntimeError(f"{row.file}: {plan.attack} + {row.quantizer} spent {spent} "
                           f"{'queries' if plan.black_box else 'gradients'} for a budget of {plan.steps}")


def _plain(crit):
    """The per-output criterion (verification classifies one path at a time)."""
    return crit.inner if isinstance(crit, AllPaths) else crit


@torch.no_grad()
def _logits(model, x: Tensor, batch_size: int = 32) -> Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _verify_score(row: Row, model, x0_u8: Tensor, crit) -> None:
    """A regressor's file: decode the row's bytes (Pillow), score them, fill the row."""
    assert row.data is not None
    x_file = codec.decode_file(row.data, row.suffix).pixels.float()
    if tuple(x_file.shape) != tuple(x0_u8.shape):
        raise RuntimeError(f"{row.file}: the file decodes to {tuple(x_file.shape)}, not {tuple(x0_u8.shape)}")
    row.distortion = _num(distortion(x_file[None], x0_u8[None].float())[0])
    row.psnr = _num(psnr(x_file[None], x0_u8[None].float())[0])
    out = model(x_file[None].to(model.device))
    row.score = _num(ScoreBelow._scores(out)[0])
    row.verified = bool(crit.success(out)[0])
    row.verified_paths = {"file": row.verified}
    row.status = "fooled" if row.verified else "failed"


@torch.no_grad()
def _verify(row: Row, model, x0_u8: Tensor, crit, settings: Settings) -> None:
    """Decode the row's bytes (once), classify them through every verification path, fill the row."""
    assert row.data is not None
    file = codec.decode_file(row.data, row.suffix)
    x_file = file.pixels.float()
    if tuple(x_file.shape) != tuple(x0_u8.shape):
        raise RuntimeError(f"{row.file}: the file decodes to {tuple(x_file.shape)}, not {tuple(x0_u8.shape)}")
    row.distortion = _num(distortion(x_file[None], x0_u8[None].float())[0])
    row.psnr = _num(psnr(x_file[None], x0_u8[None].float())[0])
    config = settings.model_config(model.config)
    plan = settings.plan
    inputs = verify.model_inputs(file, config, plan.verify_paths)
    paths: dict[str, bool | None] = {}
    pred_main = None
    for p, xin in inputs.items():
        if xin is None:
            paths[p] = None
            continue
        logits = (classify_input(model, p, xin[None].to(model.device)) if plan.one_member_max
                  else model(xin[None].to(model.device)))
        paths[p] = bool(crit.success(logits)[0])
        room = -float(crit.loss(logits)[0])
        row.file_margin = room if row.file_margin is None else min(row.file_margin, room)
        if pred_main is None or p == plan.main_path:  # the main path's, else the first path's with an input
            pred_main = int(logits.argmax(1)[0])
    row.verified_paths = paths
    row.verified = all(v for v in paths.values() if v is not None) and any(v is not None for v in paths.values())
    row.adversarial_label = pred_main
    row.adversarial_name = model.class_name(pred_main) if pred_main is not None else ""
    row.status = "fooled" if row.verified else "failed"
    if settings.size == "native":
        a = verify.eval_float(x_file, config)
        b = verify.eval_float(x0_u8.float(), config)
        row.distortion_model = _num(distortion(a[None], b[None])[0])


def verify_row(row: Row, model, x0_u8: Tensor, crit, settings: Settings) -> None:
    """Fill ``row`` (its ``data`` and ``suffix`` set) as :func:`run_batch` does: decode the bytes,
    classify them on every verification path of ``settings``, status ``fooled`` or ``failed``.
    For drivers that attack and quantize themselves (``experiments/stego_pairs.py``); x0_u8:
    uint8 (3, H, W) original; crit: the criterion of this one image."""
    _verify(row, model, x0_u8, crit, settings)


# -- the driver: writes what the worker made --------------------------------------------------
def output_name(item_stem: str, suffix: str) -> str:
    """``<stem>_adv<suffix>``: written files keep the original file's stem."""
    return f"{item_stem}_adv{suffix}"


def write_outputs(rows: Iterable[Row], out_dir: str | Path, *, multi: bool = False,
                  original: Callable[[Row], Tensor] | None = None) -> None:
    """Write the verified rows' files into ``out_dir`` (atomically) and set ``row.output``.

    multi: several quantizers per image: name files ``<stem>_<quantizer>_adv<suffix>``.
    original: if given, ``row -> uint8 (3, H, W)`` original pixels, and a ``<stem>_compare.png``
    (original | adversarial | amplified perturbation) is written beside each file.
    """
    out_dir = Path(out_dir)
    for r in rows:
        if r.status != "fooled" or r.data is None:
            continue
        stem = Path(r.file).stem + (f"_{r.quantizer}" if multi else "")
        r.output = str(codec.write_atomic(out_dir / output_name(stem, r.suffix), r.data))
        if original is not None and r.suffix != ".npy":
            from .figures import save_comparison
            psnr_text = f"{r.psnr:.1f} dB" if r.psnr is not None else "identical"
            before, after = ((f"original: score {r.original_score:.1f}", f"score {r.score:.1f}")
                             if r.score is not None else (f"original: {r.label_name}", r.adversarial_name))
            save_comparison(out_dir / f"{stem}_compare.png", original(r), codec.decode(r.data, r.suffix),
                            before, f"{after} (d={r.distortion:.3f}, {psnr_text})")


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding; (0, 0) if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001  (unreadable files become error rows later)
        return (0, 0)


def plan_batches(items: Sequence[ImageItem], batch_size: int, settings: Settings) -> list[list[int]]:
    """Batches of item indices. At native size, images of the same size are put together (one
    attack call per size, see :func:`run_batch`), so that batching pays off; at model size, the
    given order."""
    order = list(range(len(items)))
    if settings.size == "native":
        sizes = [_header_size(it.path) for it in items]
        order.sort(key=lambda i: (sizes[i], i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def attack_files(model, items: Sequence[ImageItem], out_dir: str | Path, settings: Settings | None = None, *,
                 batch_size: int = 8, progress: bool = True, figures: bool = True, console: Any = None,
                 ray: Any = None, stats: list | None = None, **kwargs: Any) -> list[Row]:
    """Attack every item in batches with a progress bar, write verified files, return the rows.

    ``settings`` or its fields as keyword arguments (``attack=``, ``steps=``, ``quantizers=`` ...).
    model: a loaded classifier; with ``ray`` (:class:`advimage.distributed.RayOptions`) a
    :class:`~advimage.distributed.ModelRef` (or model spec) that each Ray worker loads: the batches
    then run as Ray tasks, and this process alone writes the files. stats: if given, gets the
    executor's :class:`~advimage.distributed.RunStats` appended (per-worker summary). A label, or
    the target class, outside the model's classes raises :class:`~advimage.data.LabelError` before
    any attack.
    """
    from .distributed import ModelRef, Unit, executor
    from .progress import progress_bar

    settings = settings or Settings(**kwargs)
    batches = plan_batches(items, batch_size, settings)
    by_item: dict[int, list[Row]] = {}
    with contextlib.ExitStack() as stack:
        if ray is None:
            config = model.config
            check_item_labels(items, config, settings)
            attacked = attacked_model(model, settings)
            results: Iterable[tuple[list[int], list[Row]]] = (
                (idx, run_batch(model, [items[i] for i in idx], settings, attacked=attacked)) for idx in batches)
        else:
            ref = model if isinstance(model, ModelRef) else ModelRef(str(model))
            ex = stack.enter_context(executor(ray))
            config = ex.model_info(ref)["config"]
            check_item_labels(items, config, settings)
            if stats is not None:
                stats.append(ex.stats)
            units = (Unit(tag=idx, model=ref, fn=run_batch, args=([items[i].with_data() for i in idx], settings),
                          cached=attacked_cache(settings), images=len(idx)) for idx in batches)
            results = ((u.tag, _lost_rows(u.args[0], settings, r) if isinstance(r, Exception) else r)
                       for u, r in ex.run(units))
        original = (lambda r: _read(ImageItem(Path(r.file)), config, settings)) if figures else None
        bar = stack.enter_context(progress_bar(progress, console))
        task = bar.add_task("attack", total=len(items), status="")
        for idx, rows in results:
            write_outputs(rows, out_dir, multi=len(settings.quantizers) > 1, original=original)
            per = len(settings.quantizers)
            for k, i in enumerate(idx):
                by_item[i] = rows[k * per:(k + 1) * per]
            done = [r for rs in by_item.values() for r in rs if r.status != "error"]
            bar.update(task, advance=len(idx),
                       status=f"fooled {sum(r.status in ('fooled', 'misclassified') for r in done)}/{len(done)}")
    return [r for i in range(len(items)) for r in by_item[i]]


def _lost_rows(items: Sequence[ImageItem], settings: Settings, exc: Exception) -> list[Row]:
    """Error rows of a batch whose Ray task failed even after its retries."""
    msg = f"worker lost on this batch after retries: {type(exc).__name__}: {exc}"
    return [Row(file=str(it.path), key=str(it.path), quantizer=q, label=it.label, error=msg)
            for it in items for q in settings.quantizers]
