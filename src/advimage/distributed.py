"""Scale out on Ray (optional extra: ``pip install "advimage[ray]"``).

A *work unit* is a batch of images of one model (and one attack): the same call the local run
makes (:func:`advimage.engine.run_batch` or :func:`advimage.bench.runner.worker_batch`), run as a
Ray task. The driver (the process that runs ``advimage bench`` / ``advimage attack``) alone writes
the store and the files: tasks get the images' bytes and return rows and encoded image bytes, so a
multi-node cluster needs no shared file system.

- Models are loaded once per worker process (a process-local cache keyed by :class:`ModelRef`)
  and Ray reuses its worker processes, so a worker loads a model once, not once per batch.
- Faults: a worker process that dies mid-task (killed, out of memory, node lost) makes Ray run the
  task again (``max_retries``); a task that still fails gives error rows for its batch and the
  run goes on. A unit's result is committed once, when it arrives: nothing is duplicated.
- Determinism: each unit carries its own seed (per batch, never per worker), and every worker runs
  torch with the driver's thread count (the intra-op thread count changes the convolutions'
  reduction order, hence the logits' last bits, and BP's trajectory amplifies it: 1 vs 2 threads
  moved BP's distortions by up to 4%). So on one machine the rows are bit-identical to a local run's
  with the same seed and thread count; ``--threads`` sets it for both, and the run records it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

RAY_HINT = 'Ray is not installed: pip install "advimage[ray]" (or pip install ray)'


class RayUnavailableError(RuntimeError):
    """``--ray`` was asked for but Ray cannot be imported or reached."""


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to build a model: a spec (``efficientnet_lite0``, ``timm:resnet50``,
    ``efficientnet_lite0+jpeg:75``), optional weights file and device."""

    spec: str
    weights: str | None = None
    device: str | None = None

    def load(self) -> Any:
        from .specs import load_classifier

        return load_classifier(self.spec, device=self.device, weights=self.weights)


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    address: ``None`` (or ``"local"``) starts a local cluster for this run and stops it at the end;
        ``"auto"`` joins the cluster started with ``ray start`` on this node (or ``RAY_ADDRESS``);
        ``"HOST:6379"`` or ``"ray://HOST:10001"`` a remote one.
    workers: tasks running at once (default: as many as the cluster's CPUs, or GPUs with
        ``gpus_per_worker``, allow). For a local cluster it also sizes the cluster.
    cpus_per_worker, gpus_per_worker: Ray resources of each task (fractions of a GPU allowed);
        None CPUs: the task's threads (GPU tasks: 1).
    threads: torch CPU threads per worker (default: this process's, i.e. a local run's, so that
        the rows are a local run's bit for bit).
    max_retries: Ray's retries of a task whose worker process died.
    imports: modules each worker imports first (e.g. one that registers custom models).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    threads: int | None = None
    max_retries: int = 3
    imports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0 and self.gpus_per_worker <= 0:
            raise ValueError("a worker needs cpus_per_worker > 0 or gpus_per_worker > 0")
        if (self.cpus_per_worker or 0) < 0 or self.gpus_per_worker < 0:
            raise ValueError("cpus_per_worker and gpus_per_worker must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")

    @property
    def torch_threads(self) -> int:
        """The workers' torch threads: ``threads``, else this process's."""
        return self.threads or _current_threads()

    @property
    def cpus(self) -> float:
        """The CPUs Ray reserves per task: ``cpus_per_worker``, else its threads (GPU tasks: 1)."""
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        return 1.0 if self.gpus_per_worker else float(self.torch_threads)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(RAY_HINT) from exc
    return ray


def import_plugins(modules: Iterable[str]) -> None:
    """Import the modules that register custom models (driver and workers alike)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RayUnavailableError(f"cannot import {name!r} (--ray-import): {exc}") from exc


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Connect to (or start) the cluster; yields the ``ray`` module. A cluster this call started
    or joined is left at the end; one that was already initialised by the caller is kept."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # "local": a new cluster even if one runs on this node (Ray's default would join it)
    kwargs: dict[str, Any] = {"address": "local", "log_to_driver": False, "include_dashboard": False}
    if options.address in (None, "local"):
        if options.workers:
            kwargs["num_cpus"] = max(1, int(round(options.workers * options.cpus)))
            if options.gpus_per_worker:
                kwargs["num_gpus"] = max(1, int(round(options.workers * options.gpus_per_worker + 0.4999)))
    else:
        kwargs = {"address": options.address, "log_to_driver": False}
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001  (ConnectionError, RuntimeError, ...: say where)
        where = options.address or "a local cluster"
        raise RayUnavailableError(f"cannot start or reach Ray at {where}: {type(exc).__name__}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


# -- the worker side ---------------------------------------------------------------------------
_STATE: dict[str, Any] = {}  # process-local: the loaded model and its Cached values (attacked variants)


def _worker_model(ref: ModelRef, threads: int, imports: tuple[str, ...]) -> tuple[Any, dict[str, Any], bool]:
    import torch

    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False  # the fastest algorithm may change from run to run
    torch.backends.cudnn.deterministic = True
    import_plugins(imports)
    loaded = False
    if _STATE.get("ref") != ref:
        _STATE.clear()  # one model per process: a worker moving to the next model frees the last
        _STATE.update(ref=ref, model=ref.load(), cached={})
        loaded = True
    return _STATE["model"], _STATE["cached"], loaded


@dataclass(frozen=True)
class Cached:
    """A value a worker builds once per loaded model, ``build(model)``, kept under ``key`` and passed
    to every unit's ``fn`` as the keyword ``keyword``: e.g. the engine's attacked model for one
    :class:`~advimage.engine.Settings` (:func:`advimage.engine.attacked_cache`). ``build`` must
    pickle (a module-level function or a ``functools.partial`` of one) to reach Ray workers."""

    key: str
    build: Callable[[Any], Any]
    keyword: str = "attacked"


def execute_unit(ref: ModelRef, fn: Callable[..., Any], cached: Cached | None, args: tuple, kwargs: dict,
                 threads: int = 1, imports: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Run ``fn(model, *args, **kwargs)`` with this process's cached model, plus
    ``{cached.keyword: cached.build(model)}`` (built once per model and key) when ``cached`` is given;
    returns its result and where/how long it ran."""
    t0 = time.perf_counter()
    model, cache, loaded = _worker_model(ref, threads, imports)
    if cached is not None:
        if cached.key not in cache:
            cache[cached.key] = cached.build(model)
        kwargs = {**kwargs, cached.keyword: cache[cached.key]}
    result = fn(model, *args, **kwargs)
    import torch

    info = {"host": socket.gethostname(), "pid": os.getpid(), "seconds": time.perf_counter() - t0,
            "model_loaded": loaded, "threads": torch.get_num_threads()}
    return result, info


def model_info(model: Any) -> dict[str, Any]:
    """What the driver needs of a model it does not load: config, class names, parameter count."""
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return {"config": model.config, "class_names": list(model.class_names), "parameters": n}


# -- the driver side ---------------------------------------------------------------------------
@dataclass
class Unit:
    """One task: ``fn(model, *args, **kwargs)`` on ``model`` (with the worker's :class:`Cached` value
    as a keyword when ``cached`` is given); ``tag`` is the caller's handle and ``images`` the number of
    images it covers (for the progress and the worker summary)."""

    tag: Any
    model: ModelRef
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    cached: Cached | None = None
    images: int = 0


@dataclass
class WorkerStats:
    """Per worker process: units and images done, seconds busy, models loaded, torch threads."""

    host: str
    pid: int
    threads: int = 0
    units: int = 0
    images: int = 0
    seconds: float = 0.0
    models_loaded: int = 0


@dataclass
class RunStats:
    """What a :class:`RayExecutor` saw: per-worker stats, retried-out failures, overhead."""

    workers: dict[tuple[str, int], WorkerStats] = field(default_factory=dict)
    failed_units: int = 0
    round_trip_seconds: float = 0.0   # sum over units of (result received - submitted)
    worker_seconds: float = 0.0       # sum over units of the time spent inside the task

    def add(self, info: dict[str, Any], images: int, round_trip: float, unit: bool = True) -> None:
        """Account a finished task (``unit=False``: a model-info call, counted only for its load)."""
        key = (info["host"], info["pid"])
        w = self.workers.setdefault(key, WorkerStats(info["host"], info["pid"]))
        w.threads = info["threads"]
        if not unit:
            w.models_loaded += bool(info["model_loaded"])
            return
        w.units += 1
        w.images += images
        w.seconds += info["seconds"]
        w.models_loaded += bool(info["model_loaded"])
        self.round_trip_seconds += round_trip
        self.worker_seconds += info["seconds"]

    def summary(self) -> list[dict[str, Any]]:
        return [dict(host=w.host, pid=w.pid, units=w.units, images=w.images, seconds=round(w.seconds, 3),
                     images_per_s=round(w.images / w.seconds, 3) if w.seconds else None,
                     models_loaded=w.models_loaded, threads=w.threads) for w in self.workers.values()]

    @property
    def overhead_per_unit(self) -> float | None:
        """Mean seconds per task spent outside the task (scheduling, transfers), as seen by the driver."""
        n = sum(w.units for w in self.workers.values())
        return (self.round_trip_seconds - self.worker_seconds) / n if n else None


class LocalExecutor:
    """Runs units one after the other in this process (the default, no Ray)."""

    def __init__(self) -> None:
        self.stats = RunStats()

    def model_info(self, ref: ModelRef) -> dict[str, Any]:
        result, info = execute_unit(ref, model_info, None, (), {}, threads=_current_threads())
        self.stats.add(info, 0, 0.0, unit=False)
        return result

    def run(self, units: Iterable[Unit]) -> Iterator[tuple[Unit, Any]]:
        for unit in units:
            t0 = time.perf_counter()
            threads = _current_threads()
            result, info = execute_unit(unit.model, unit.fn, unit.cached, unit.args, unit.kwargs,
                                        threads=threads)
            self.stats.add(info, unit.images, time.perf_counter() - t0)
            yield unit, result

    def close(self) -> None:
        _STATE.clear()


def _current_threads() -> int:
    import torch

    return torch.get_num_threads()


class RayExecutor:
    """Runs units as Ray tasks, at most ``workers`` at once, and yields results as they arrive.

    A unit whose task failed even after Ray's retries is yielded with the exception as result.
    """

    def __init__(self, ray: Any, options: RayOptions) -> None:
        self.ray, self.options = ray, options
        self.threads = options.torch_threads  # resolved once: every task runs with the driver's count
        self.stats = RunStats()
        self._remote = ray.remote(execute_unit).options(
            num_cpus=options.cpus, num_gpus=options.gpus_per_worker, max_retries=options.max_retries,
            retry_exceptions=False)
        self.workers = options.workers or self._cluster_workers()

    def _cluster_workers(self) -> int:
        res = self.ray.cluster_resources()
        if self.options.gpus_per_worker:
            n = res.get("GPU", 0) / self.options.gpus_per_worker
        else:
            n = res.get("CPU", 1) / self.options.cpus
        return max(1, int(n))

    def _submit(self, unit: Unit) -> Any:
        return self._remote.remote(unit.model, unit.fn, unit.cached, unit.args, unit.kwargs,
                                   self.threads, self.options.imports)

    def model_info(self, ref: ModelRef) -> dict[str, Any]:
        """Config, class names and size of a model, from a worker (the driver need not load it)."""
        result, info = self.ray.get(self._remote.remote(ref, model_info, None, (), {}, self.threads,
                                                        self.options.imports))
        self.stats.add(info, 0, 0.0, unit=False)
        return result

    def run(self, units: Iterable[Unit]) -> Iterator[tuple[Unit, Any]]:
        from ray.exceptions import RayError

        todo = iter(units)
        in_flight: dict[Any, tuple[Unit, float]] = {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.workers:
                unit = next(todo, None)
                if unit is None:
                    exhausted = True
                    break
                in_flight[self._submit(unit)] = (unit, time.perf_counter())
            if not in_flight:
                return
            ready, _ = self.ray.wait(list(in_flight), num_returns=1)
            unit, t_submit = in_flight.pop(ready[0])
            try:
                result, info = self.ray.get(ready[0])
            except RayError as exc:
                self.stats.failed_units += 1
                yield unit, exc
                continue
            self.stats.add(info, unit.images, time.perf_counter() - t_submit)
            yield unit, result

    def close(self) -> None:
        pass


@contextlib.contextmanager
def executor(options: RayOptions | None) -> Iterator[LocalExecutor | RayExecutor]:
    """The executor for ``options`` (None: local, in this process)."""
    if options is None:
        ex = LocalExecutor()
        try:
            yield ex
        finally:
            ex.close()
        return
    import_plugins(options.imports)
    with ray_session(options) as ray:
        yield RayExecutor(ray, options)


def worker_table(stats: RunStats, console: Any = None) -> None:
    """Print the per-worker summary (rich table) on ``console`` (default stderr)."""
    from rich.table import Table

    from .progress import stderr_console

    table = Table(title="workers")
    for col in ("host", "pid", "threads", "batches", "images", "busy s", "img/s", "model loads"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for w in stats.summary():
        table.add_row(w["host"], str(w["pid"]), str(w["threads"]), str(w["units"]), str(w["images"]),
                      f"{w['seconds']:.1f}",
                      "" if w["images_per_s"] is None else f"{w['images_per_s']:.2f}", str(w["models_loaded"]))
    (console or stderr_console()).print(table)
    if stats.failed_units:
        (console or stderr_console()).print(f"[red]{stats.failed_units} batches failed after Ray's retries "
                                            "(their images are error rows)")


# -- command line --------------------------------------------------------------------------------
def add_arguments(parser: Any) -> None:
    """The ``--ray`` options shared by ``advimage attack`` and ``advimage bench``."""
    g = parser.add_argument_group("Ray (pip install \"advimage[ray]\")")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the batches as Ray tasks: alone, on a local cluster started for this run; 'auto': "
                        "the cluster `ray start` runs on this node; HOST:6379 or ray://HOST:10001: a remote one")
    g.add_argument("--workers", type=int, default=None,
                   help="with --ray: tasks at once (default: as many as the cluster's CPUs/GPUs allow)")
    g.add_argument("--cpus-per-worker", type=float, default=None,
                   help="with --ray: CPUs Ray reserves per task (default: its torch threads, i.e. --threads or this "
                        "process's; GPU tasks: 1); the tasks run with the same threads as a local run, for the same "
                        "rows")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="with --ray: GPUs per task (fractions allowed)")
    g.add_argument("--ray-import", action="append", default=[], metavar="MODULE",
                   help="with --ray: a module every worker imports first (e.g. one registering custom models)")


def options_from_args(args: Any) -> RayOptions | None:
    """RayOptions from parsed arguments (None without ``--ray``); ValueError for bad values."""
    if args.ray is None:
        if args.workers is not None or args.ray_import or args.gpus_per_worker or args.cpus_per_worker is not None:
            raise ValueError("--workers, --cpus-per-worker, --gpus-per-worker and --ray-import need --ray")
        return None
    return RayOptions(address=None if args.ray == "local" else args.ray, workers=args.workers,
                      cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                      threads=getattr(args, "threads", None),
                      imports=tuple(args.ray_import))
