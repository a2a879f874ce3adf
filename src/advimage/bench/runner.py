"""RoBIC runner (thesis ch. 6): attack an image set with several models, store, summarize, report.

For every (model, attack) of a benchmark and every image of the set:

- everything goes through the engine (:func:`advimage.engine.run_batch`): this module is its
  driver (store, examples, report) and :func:`worker_batch` the pure worker;
- white box (attacks whose registry entry is not black box): the attack in best-effort mode
  with a gradient budget ``steps`` shared with the quantizer (``auto`` by default: the lattice walk
  when the budget allows it, else scaled rounding; any registered quantizer with ``quantizer=``);
- black box (SurFree, HSJ, CGBA, CGBA-H): a label-query budget ``queries``; the attack already outputs integers;
- the file bytes are decoded back with Pillow, and success and distortion (eq. 6.2) are
  measured on the decoded pixels (the file is the truth);
- models may be defended classifiers (``efficientnet_lite0+jpeg:75``, see :mod:`advimage.specs`);
- an original the model already misclassifies (prediction != label) is not attacked: it counts
  as fooled at distortion 0 (§6.2.4); an image without a label is labelled by the model itself;
- a missing or corrupt image becomes an error row and the run goes on.

Each batch's rows are committed to the run's :class:`~advimage.bench.store.ResultStore` as soon
as the batch is done, so ``resume=True`` continues after a crash, SIGKILL or Ctrl-C and loses at
most the batch in progress; images already committed for the same settings are never redone.

Reproducibility: batches are fixed slices of the image list; batch ``k`` of a (model, attack) is
attacked with the seed :func:`batch_seed` ``(seed, model, attack, k)``, given to torch and to the
attack's ``seed`` parameter where it has one. Same images, seed and batch size give the same rows
on CPU, whether or not the run was interrupted. (On GPU, cuDNN may add tiny nondeterminism.)

At the end: summaries (:func:`~advimage.bench.metrics.summarize_rows`), the report
(``run_dir/report/report.html``, Table 6.2 layout), ``results.csv`` and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks import UnknownAttackError
from ..attacks import names as attack_names
from ..attacks import spec as attack_spec
from ..codec import decode, encode_png, write_atomic
from ..data import ImageItem, check_labels, discover
from ..distributed import ModelRef, RayOptions, Unit, executor, worker_table
from ..engine import Settings as EngineSettings
from ..engine import attacked_cache, run_batch
from ..images import ImageReadError, load_for_model, read_image
from ..models import PixelClassifier
from ..plan import check_df
from ..progress import progress_bar, stderr_console
from ..quantize import AUTO
from ..quantize import spec as quantizer_spec
from ..specs import check as check_model_spec
from .metrics import OperatingCurve, RobustnessSummary, summarize_rows, unquantized_curves
from .report import GalleryItem, ModelRow, ReportFiles, example_item, plot_curves, table_rows, write_report
from .store import COLUMNS, DB_NAME, ResultStore

#: The benchmark's attacks where none are given: BP, and CGBA at 2000 label queries, which reaches
#: there what SurFree reaches at 5000 (docs/results.md, issue 25).
DEFAULT_ATTACKS = ("bp", "cgba:2000")
#: The thesis's RoBIC protocol (Ch. 6): BP, and SurFree at 5000 queries (``--thesis-protocol``).
THESIS_ATTACKS = ("bp", "surfree:5000")
#: Version of the measurement protocol, part of every configuration's settings (bump it when the
#: way a row is measured changes, so that old rows are not reused).
PROTOCOL = 2  # 2: the engine (steps covers the quantizer's gradient; effective hyperparameters)


class ConfigError(ValueError):
    """A benchmark option is invalid (raised before any work)."""


class RunExistsError(FileExistsError):
    """The output folder already holds results and ``resume`` was not asked for."""


class LabelsChangedError(ConfigError):
    """The run's store holds rows measured with other labels than the image set's now."""


@dataclass(frozen=True)
class Job:
    """One (model, attack) of a benchmark.

    attack: registry name; label: name in the store and report (``"cw:1000"`` when the budget
    was given with the attack); budget: gradients (white box) or queries (black box) per image;
    settings: what identifies its rows in the store (hashed).
    """

    model: str
    attack: str
    label: str
    black_box: bool
    budget: int
    quantizer: str
    settings: dict[str, Any]
    engine: EngineSettings


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced.

    rows: the per-image store rows of this benchmark's configurations (image order).
    summaries, curves: per (model, attack, quantizer). table: Table 6.2 lines; markdown: the
    same as Markdown. params_millions: counted from each model's parameters.
    """

    run_dir: Path
    jobs: list[Job]
    rows: list[dict[str, Any]]
    summaries: list[RobustnessSummary]
    curves: dict[tuple[str, str, str], OperatingCurve]
    table: list[ModelRow]
    markdown: str
    report: ReportFiles
    results_csv: Path
    params_millions: dict[str, float]
    computed: int = 0           # images attacked by this call (the rest were reused)
    n_errors: int = 0           # error rows among ``rows``
    seconds: float = 0.0        # wall time of this call
    errors: list[str] = field(default_factory=list)  # distinct error messages
    workers: list[dict[str, Any]] = field(default_factory=list)  # per worker process (see distributed.RunStats)


# -- configuration ---------------------------------------------------------------------------
def _split(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n and n.strip()]


def parse_attack(spec: str) -> tuple[str, int | None]:
    """``"bp"`` -> ("bp", None); ``"cw:1000"`` -> ("cw", 1000) (the budget for that attack)."""
    name, sep, budget = spec.partition(":")
    if not sep:
        return name, None
    try:
        b = int(budget)
    except ValueError:
        raise ConfigError(f"bad attack {spec!r}: expected NAME or NAME:BUDGET with an integer budget") from None
    if b < 1:
        raise ConfigError(f"bad attack {spec!r}: the budget must be >= 1")
    return name, b


def check_names(models: Sequence[str], attacks: Sequence[str]) -> None:
    """Refuse unknown models or attacks with the list of valid names (nothing is built)."""
    for m in models:
        try:
            check_model_spec(m)
        except ValueError as exc:  # a defense argument refused (``+bits:0``)
            raise ConfigError(f"bad model {m!r}: {exc}") from None
    valid = attack_names()
    for a in attacks:
        name, _ = parse_attack(a)
        if name not in valid:
            raise UnknownAttackError(f"unknown attack {name!r}; valid attacks: {', '.join(valid)}")


def make_jobs(models: Sequence[str], attacks: Sequence[str], *, steps: int, queries: int, df: float | None,
              seed: int, quantizer: str = "auto", quality: int | None = None, size: str = "model",
              victim: str = "pil+both", margin: float = 0.0, precision: str = "fp32", channels_last: bool = False,
              compile: bool = False) -> list[Job]:
    """The (model, attack) jobs of a benchmark, models outer, attacks inner, in the given order.

    White-box attacks get ``steps`` gradients (attack + quantizer) and ``quantizer``; black-box
    ones ``queries`` queries (every model call of a row counted) and :func:`black_box_quantizer`.
    ``df``/``quality`` (None: the quantizers' defaults) go to the jobs whose quantizer takes them
    and are refused where none does. The settings hold the engine's
    :meth:`~advimage.engine.Settings.identity` (effective hyperparameters).
    """
    _refuse_unused_options(quantizer, df, quality)
    jobs = []
    for m in models:
        for label in attacks:
            name, budget = parse_attack(label)
            black = attack_spec(name).black_box
            budget = budget or (queries if black else steps)
            asked = black_box_quantizer(quantizer) if black else quantizer
            qs = None if asked == AUTO else quantizer_spec(asked)
            engine = EngineSettings(attack=name, steps=budget, quantizers=(asked,),
                                    df=df if qs is not None and qs.uses_df else None,
                                    quality=quality if qs is not None and qs.uses_quality else None,
                                    size=size, victim=victim, seed=seed, margin=margin, precision=precision,
                                    channels_last=channels_last, compile=compile)
            qname = engine.quantizers[0]  # "auto" resolved per attack and budget
            settings: dict[str, Any] = {"protocol": PROTOCOL, "model": m, **engine.identity(), "quantizer": qname,
                                        "verify": "file"}
            jobs.append(Job(m, name, label, black, budget, qname, settings, engine))
    return jobs


def black_box_quantizer(quantizer: str) -> str:
    """The quantizer of a bench's black-box jobs: ``quantizer`` where it needs no gradient, else
    ``jpeg-pixels`` for a JPEG quantizer and ``auto`` (``scaled``) for the others."""
    if quantizer == AUTO or quantizer_spec(quantizer).gradients == 0:
        return quantizer
    return "jpeg-pixels" if quantizer_spec(quantizer).suffix == ".jpg" else AUTO


def _refuse_unused_options(quantizer: str, df: float | None, quality: int | None) -> None:
    """``--df``/``--quality`` given while no quantizer of the bench takes them: refused."""
    used = [quantizer_spec(q) for q in ([quantizer] if quantizer != AUTO else [])]
    used += [quantizer_spec(black_box_quantizer(quantizer))] if black_box_quantizer(quantizer) != AUTO else []
    if df is not None and not any(s.uses_df for s in used):
        raise ConfigError(f"--df applies to the quantizers smart, smart-prune, jpeg and the stego ones; "
                          f"--quantize {quantizer} does not use it")
    if quality is not None and not any(s.uses_quality for s in used):
        raise ConfigError(f"--quality applies to --quantize jpeg or jpeg-pixels; --quantize {quantizer} does not "
                          "use it")


def batch_seed(seed: int, model: str, attack: str, index: int) -> int:
    """Seed of batch ``index`` of a (model, attack): stable across runs, processes and resumes."""
    return zlib.crc32(f"{seed}:{model}:{attack}:{index}".encode()) & 0x7FFFFFFF


def image_keys(items: Sequence[ImageItem]) -> list[str]:
    """Stable names of the images in the store: paths relative to their common folder (POSIX)."""
    if not items:
        return []
    parents = [os.path.abspath(it.path.parent) for it in items]
    root = os.path.commonpath(parents)
    keys = [Path(os.path.relpath(os.path.abspath(it.path), root)).as_posix() for it in items]
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            raise ConfigError(f"image {k!r} is listed twice in the image set")
        seen.add(k)
    return keys


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of a model (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# -- the worker: a batch of one job -> rows + example bytes (no file written) ----------------
def worker_batch(model: PixelClassifier, job: Job, items: Sequence[ImageItem], keys: Sequence[str], *,
                 seed: int, examples_left: int = 0,
                 attacked: Any = None) -> tuple[list[dict[str, Any]], dict[str, bytes], list[str]]:
    """Store rows for a batch of images of one job, the bytes of up to ``examples_left`` fooled
    examples (``{name: png bytes}``, ``<name>_orig.png`` / ``<name>_adv.png``) and the messages of
    the batch's failures. Pure: the caller commits rows and writes examples (it may run in another
    process or on another machine, see :mod:`advimage.distributed`). An attack that raises (e.g.
    out of memory) gives error rows for the batch and the run goes on."""
    settings = dataclasses.replace(job.engine, seed=seed)
    try:
        out = run_batch(model, items, settings, keys, attacked=attacked)
    except Exception as exc:  # noqa: BLE001  (record it, go on)
        msg = f"{job.attack} failed on this batch: {type(exc).__name__}: {exc}"
        return error_rows(job, items, keys, msg), {}, [msg]
    rows, examples = [], {}
    by_key = dict(zip(keys, items))
    base = {"model": job.model, "attack": job.label, "quantizer": job.quantizer}
    for r in out:
        row: dict[str, Any] = {**base, "image": r.key, "label": r.label, "seconds": r.seconds}
        if r.status == "error":
            row["error"] = r.error
            rows.append(row)
            continue
        extra: dict[str, Any] = {"label_source": r.label_source, "forwards": r.forwards}
        row["prediction"] = r.original_prediction
        if r.status == "misclassified":  # already adversarial: fooled at distortion 0, not attacked
            row.update(adv_label=r.original_prediction, distortion=0.0, success=True, gradients=r.gradients,
                       queries=r.queries)
            extra["misclassified"] = True
        else:
            row.update(adv_label=r.adversarial_label, distortion=r.distortion, success=r.status == "fooled",
                       gradients=r.gradients, queries=r.queries)
            if not job.black_box:  # black-box queries are already integer images: no float curve
                extra.update(attack_success=r.attack_success, attack_distortion=r.attack_distortion,
                             quantize_success=r.quantize_success, lam=r.lam)
            if r.distortion_model is not None:
                extra["distortion_model"] = r.distortion_model
            if r.file_margin is not None:
                extra["file_margin"] = r.file_margin
            if r.compression_distortion is not None:
                extra["compression_distortion"] = r.compression_distortion
            if r.status == "fooled" and examples_left > 0 and r.suffix != ".npy":
                examples_left -= 1
                name = _slug(r.key).replace(".", "_")
                item = by_key[r.key]
                original = (load_for_model(item.path, model.config, item.data) if settings.size == "model"
                            else read_image(item.path, item.data))
                examples[f"{name}_orig.png"] = encode_png(original)
                examples[f"{name}_adv.png"] = encode_png(decode(r.data, r.suffix))
                extra["example"] = name
        row["extra"] = extra
        rows.append(row)
    return rows, examples, []


def error_rows(job: Job, items: Sequence[ImageItem], keys: Sequence[str], msg: str) -> list[dict[str, Any]]:
    """Error rows for a batch that produced nothing (the attack raised, or its worker was lost)."""
    return [{"model": job.model, "attack": job.label, "quantizer": job.quantizer, "image": k, "label": it.label,
             "seconds": 0.0, "error": msg} for it, k in zip(items, keys)]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"


# -- progress ------------------------------------------------------------------------------------
class _Tally:
    """Running counts of one job for the progress bar."""

    def __init__(self) -> None:
        self.n = self.correct = self.fooled = self.errors = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            if r.get("error"):
                self.errors += 1
                continue
            self.n += 1
            if r.get("prediction") == r.get("label"):
                self.correct += 1
                self.fooled += bool(r.get("success"))

    def status(self) -> str:
        if not self.n:
            return f"[red]{self.errors} errors" if self.errors else ""
        s = f"η(0) {self.correct / self.n:.0%} · fooled {self.fooled}/{self.correct}"
        if self.correct:
            s += f" ({self.fooled / self.correct:.0%})"
        return s + (f" · [red]{self.errors} errors" if self.errors else "")


# -- the benchmark -------------------------------------------------------------------------------
def run_benchmark(images: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[ImageItem],
                  models: str | Sequence[str] = "efficientnet_lite0", *,
                  attacks: str | Sequence[str] = DEFAULT_ATTACKS, steps: int = 100, queries: int = 5000,
                  df: float | None = None, limit: int | None = None, seed: int = 0, batch_size: int = 16,
                  device: str | None = None, out: str | os.PathLike = "runs/bench", resume: bool = False,
                  compare: bool = False, gallery: int = 2, progress: bool = True, console: Any = None,
                  title: str | None = None, quantizer: str = "auto", quality: int | None = None,
                  size: str = "model", victim: str = "pil+both", margin: float = 0.0,
                  ray: RayOptions | None = None, precision: str = "fp32", channels_last: bool = False,
                  compile: bool = False) -> BenchmarkResult:
    """Benchmark ``models`` against ``attacks`` on an image set; store, summarize and report.

    images: image files or folders (see :func:`advimage.data.discover`), or ImageItems.
    models, attacks: names (or comma-separated strings); an attack may carry its own budget as
        ``NAME:BUDGET``. White-box attacks get ``steps`` gradients per image, black-box ones
        (``black_box`` in their :data:`~advimage.attacks.ATTACKS` entry) ``queries`` label queries.
    df: degree of freedom of smart quantization (None: 1; refused where no quantizer takes it).
    limit: first N images. quantizer, quality: the quantizer of white-box outputs (``auto`` or any
        registered one: smart, jpeg, ...; see :func:`black_box_quantizer`) and its JPEG quality (None: 90).
        size, victim: as in :class:`advimage.engine.Settings` (the thesis's RoBIC protocol attacks at the
        model's resolution: ``size="model"``).
    precision, channels_last, compile: faster attack passes (:mod:`advimage.models.fast`);
        the files are verified in fp32.
    models may name defended classifiers, e.g. ``efficientnet_lite0+jpeg:75``.
    seed: seeds torch and the attacks (per batch, see :func:`batch_seed`).
    batch_size: images per attack call and per committed batch; part of what makes rows
        reproducible. device: model device (default CUDA if available).
    out: run directory (results.sqlite, settings.json, results.csv, summary.json, report/,
        examples/). resume: continue a run directory that already holds results; without it
        such a directory is refused (:class:`RunExistsError`).
    compare: also plot all attacks of each model on one figure (Fig. 6.1 style).
    gallery: fooled examples per (model, attack) shown in the report; they come from the first
        ``gallery`` batches, so the same files whatever the order in which batches finish.
    progress: show a rich progress bar (on ``console``, default stderr).
    ray: run the batches as Ray tasks (see :mod:`advimage.distributed`); the rows equal a local
        run's with the same seed. None: in this process.

    Raises UnknownModelError / UnknownAttackError (with the valid names), ConfigError (bad
    option; :class:`LabelsChangedError`: the store's rows were measured with other labels),
    DataError (no images; :class:`~advimage.data.LabelError`: a label outside a model's classes)
    or RunExistsError before any work.
    """

    t_start = time.perf_counter()
    model_list, attack_list = _split(models), _split(attacks)
    if not model_list:
        raise ConfigError("no model given")
    if not attack_list:
        raise ConfigError("no attack given")
    check_names(model_list, attack_list)
    for what, vals in (("model", model_list), ("attack", attack_list)):
        dup = sorted({v for v in vals if vals.count(v) > 1})
        if dup:
            raise ConfigError(f"{what} listed twice: {', '.join(dup)}")
    if steps < 1 or queries < 1:
        raise ConfigError("steps and queries must be >= 1")
    if batch_size < 1:
        raise ConfigError("batch_size must be >= 1")
    if limit is not None and limit < 1:
        raise ConfigError("limit must be >= 1 (or None for all images)")
    try:
        check_df(df)  # the engine's own check, before any image is read
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if gallery < 0:
        raise ConfigError("gallery must be >= 0")

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if all(isinstance(i, ImageItem) for i in images):
        items, sources = list(images), [f"{len(images)} ImageItems"]
    else:
        items, sources = discover(list(images)), [str(p) for p in images]
    if limit is not None:
        items = items[:limit]
    keys = image_keys(items)
    run_dir = Path(out)
    if (run_dir / DB_NAME).exists():
        with ResultStore(run_dir) as st:
            n = len(st)
            if n and not resume:
                raise RunExistsError(f"{run_dir} already holds {n} results: pass resume=True (--resume) to "
                                     "continue it (finished configurations are reused), or choose another output "
                                     "folder")
            check_stored_labels(st, items, keys)
    try:
        jobs = make_jobs(model_list, attack_list, steps=steps, queries=queries, df=df, seed=seed,
                         quantizer=quantizer, quality=quality, size=size, victim=victim, margin=margin,
                         precision=precision, channels_last=channels_last, compile=compile)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    console = console or stderr_console()

    run_settings = {"images": sources, "n_images": len(items), "models": model_list, "attacks": attack_list,
                    "steps": steps, "queries": queries, "df": df, "quantizer": quantizer, "quality": quality,
                    "size": size, "victim": victim, "margin": margin, "limit": limit, "seed": seed,
                    "batch_size": batch_size, "threads": ray.torch_threads if ray else torch.get_num_threads(),
                    "device": device, "compare": compare, "protocol": PROTOCOL,
                    "jobs": [j.settings for j in jobs]}
    errors: list[str] = []
    params: dict[str, float] = {}
    class_names: dict[str, list[str]] = {}
    computed = 0
    with contextlib.ExitStack() as stack:
        ex = stack.enter_context(executor(ray))

        def model_info(m: str) -> None:
            """Fetch a model's size and class names; refuse the labels outside its classes."""
            if m not in params:
                info = ex.model_info(ModelRef(m, device=device))
                params[m] = info["parameters"] / 1e6
                class_names[m] = info["class_names"]
                check_labels(items, info["config"].num_classes, m)

        for m in reversed(model_list):  # the first model is loaded last: its batches come first
            model_info(m)
        store = stack.enter_context(ResultStore(run_dir))
        store.start_run(run_settings, seed=seed)
        done = [store.done(j.model, j.label, j.quantizer, j.settings, retry_errors=True) for j in jobs]
        key_set = set(keys)
        tallies, examples_dirs = [], []
        for j, d in zip(jobs, done):
            tally = _Tally()
            tally.add(r for r in store.rows(model=j.model, attack=j.label, quantizer=j.quantizer,
                                             settings=j.settings) if r["image"] in d)
            tallies.append(tally)
            examples_dirs.append(run_dir / "examples" / _slug(j.model) / _slug(j.label))

        def units() -> Iterator[Unit]:
            """Batches not yet committed, models outer."""
            for m in model_list:
                for k, job in enumerate(jobs):
                    if job.model != m:
                        continue
                    for b, start in enumerate(range(0, len(items), batch_size)):
                        pending = [i for i in range(start, min(start + batch_size, len(items)))
                                   if keys[i] not in done[k]]
                        if not pending:
                            continue
                        batch = [items[i].with_data() if ray is not None else items[i] for i in pending]
                        # examples come from the first `gallery` batches: the same files whatever the
                        # order in which batches finish (local, resumed or on Ray)
                        yield Unit(tag=(k, pending), model=ModelRef(m, device=device), fn=worker_batch,
                                   args=(job, batch, [keys[i] for i in pending]),
                                   kwargs=dict(seed=batch_seed(seed, job.model, job.label, b),
                                               examples_left=gallery if b < gallery else 0),
                                   cached=attacked_cache(job.engine), images=len(pending))

        with progress_bar(progress, console) as bar:
            tasks = [bar.add_task(f"{j.model} · {j.label}", total=len(items), completed=len(d & key_set),
                                  status=tallies[k].status()) for k, (j, d) in enumerate(zip(jobs, done))]
            for unit, result in ex.run(units()):
                k, pending = unit.tag
                job = jobs[k]
                if isinstance(result, Exception):  # the task failed even after Ray's retries
                    msg = f"worker lost on this batch after retries: {type(result).__name__}: {result}"
                    rows, examples, failures = error_rows(job, unit.args[1], unit.args[2], msg), {}, [msg]
                else:
                    rows, examples, failures = result
                for msg in failures:
                    if msg not in errors:
                        errors.append(msg)
                        console.print(f"[yellow]warning:[/] {job.model} · {job.label}: {msg}")
                for name, data in examples.items():  # examples first: a committed row never names a missing file
                    write_atomic(examples_dirs[k] / name, data)
                store.add_batch(rows, settings=job.settings)
                done[k].update(r["image"] for r in rows)
                computed += len(rows)
                tallies[k].add(rows)
                bar.update(tasks[k], advance=len(rows), status=tallies[k].status())
        rows = collect_rows(store, jobs, keys)
        workers = ex.stats.summary()
    if ray is not None and progress:
        worker_table(ex.stats, console)
    result = _finish(run_dir, jobs, rows, params, class_names, n_images=len(items), compare=compare,
                     computed=computed, errors=errors, seconds=time.perf_counter() - t_start, title=title,
                     gallery=gallery)
    result.workers = workers
    return result


def check_stored_labels(store: ResultStore, items: Sequence[ImageItem], keys: Sequence[str]) -> None:
    """Refuse (:class:`LabelsChangedError`) a store whose rows of these images were measured with
    other labels than the items', naming the first such image in the items' order."""
    stored: dict[str, dict[tuple[int | None, str | None], None]] = {}
    for image, label, source in store.image_labels():
        stored.setdefault(image, {})[label, source] = None
    for item, key in zip(items, keys):
        for label, source in stored.get(key, {}):
            if not _same_label(item.label, label, source):
                now = item.label if item.label is not None else "none (the model's prediction)"
                where = f" ({item.origin.where})" if item.origin else ""
                was = f"the model's prediction {label}" if source == "model" else f"label {label}"
                raise LabelsChangedError(
                    f"{store.run_dir}: image {key!r} was measured with {was}, its label is now {now}{where}; "
                    "restore the old labels or choose another output folder")


def _same_label(label: int | None, stored: int | None, source: str | None) -> bool:
    """Whether a stored row's label (``source``: "file", "model", or None in rows that do not
    record it) is the one ``label`` (None: the model's prediction) gives."""
    if source == "model":
        return label is None
    if source == "file":
        return label == stored
    return label is None or label == stored


def collect_rows(store: ResultStore, jobs: Sequence[Job], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Store rows of the jobs' configurations restricted to ``keys``, in job then image order."""
    order = {k: i for i, k in enumerate(keys)}
    out = []
    for j in jobs:
        rs = [r for r in store.rows(model=j.model, attack=j.label, quantizer=j.quantizer, settings=j.settings)
              if r["image"] in order]
        out.extend(sorted(rs, key=lambda r: order[r["image"]]))
    return out


def _gallery(run_dir: Path, jobs: Sequence[Job], rows: Sequence[dict[str, Any]],
             class_names: dict[str, list[str]], gallery: int) -> list[GalleryItem]:
    from ..images import read_image

    items = []
    for j in jobs:
        folder = run_dir / "examples" / _slug(j.model) / _slug(j.label)
        shown = 0
        for r in rows:
            ex = (r.get("extra") or {}).get("example")
            if r["model"] != j.model or r["attack"] != j.label or not ex or shown >= gallery:
                continue
            shown += 1
            try:
                x0, xa = read_image(folder / f"{ex}_orig.png"), read_image(folder / f"{ex}_adv.png")
            except ImageReadError:
                continue  # example file removed: the rows still hold the measurement
            cn = class_names.get(j.model, [])
            name = lambda i: cn[i] if 0 <= i < len(cn) else str(i)  # noqa: E731, B023  (used in this iteration only)
            items.append(example_item(f"{j.model} · {j.label}: {r['image']}, d = {r['distortion']:.3f}", x0, xa,
                                      original_class=name(int(r["label"])),
                                      adversarial_class=name(int(r["adv_label"]))))
    return items


def _finish(run_dir: Path, jobs: list[Job], rows: list[dict[str, Any]], params: dict[str, float],
            class_names: dict[str, list[str]], *, n_images: int, compare: bool, computed: int,
            errors: list[str], seconds: float, title: str | None, gallery: int) -> BenchmarkResult:
    entries = summarize_rows(rows)
    summaries = [s for s, _ in entries]
    curves = {s.key: c for s, c in entries}
    black = {j.label for j in jobs if j.black_box}
    figures: list[Any] = []
    if compare:
        for m in dict.fromkeys(j.model for j in jobs):
            ent = [(s, c) for s, c in entries if s.model == m]
            if len(ent) > 1:
                png, _svg = plot_curves(ent, run_dir / "report" / "compare" / _slug(m),
                                        title=f"{m}: operating curves of {len(ent)} attacks")
                figures.append((f"All attacks on {m} (Fig. 6.1 style)", png))
    figures += _gallery(run_dir, jobs, rows, class_names, gallery)
    files = write_report(run_dir, summaries, curves, figures, params_millions=params, black_box_attacks=black,
                         unquantized=unquantized_curves(rows),
                         title=title or f"advimage robustness report ({n_images} images)")
    results_csv = write_rows_csv(rows, run_dir / "results.csv")
    table = table_rows(summaries, black_box_attacks=black, params_millions=params)
    (run_dir / "summary.json").write_text(json.dumps(
        {"summaries": [s.to_dict() for s in summaries], "params_millions": params,
         "jobs": [j.settings for j in jobs], "table": [dataclasses.asdict(r) for r in table]},
        indent=2, default=_json_default) + "\n")
    return BenchmarkResult(run_dir=run_dir, jobs=jobs, rows=rows, summaries=summaries, curves=curves, table=table,
                           markdown=files.table_md.read_text(encoding="utf-8"), report=files,
                           results_csv=results_csv, params_millions=params, computed=computed,
                           n_errors=sum(1 for r in rows if r.get("error")), seconds=seconds, errors=errors)


def _json_default(x: Any) -> Any:
    return str(x)


def write_rows_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Rows as CSV with the store's columns (``extra`` as JSON, success as 0/1)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            r = dict(r)
            r["extra"] = None if r.get("extra") is None else json.dumps(r["extra"], sort_keys=True)
            r["success"] = None if r.get("success") is None else int(r["success"])
            w.writerow({k: r.get(k) for k in COLUMNS})
    return path
