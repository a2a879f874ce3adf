"""Ray scale-out benchmark: throughput with 1 and 2 workers (one torch thread each), and the
scheduling overhead per task.

On one warm local cluster (``ray.init(num_cpus=2)``, worker processes started and models loaded
before timing), the same benchmark units (model x attack x batch, exactly as ``advimage bench
--ray`` makes them) are run with at most 1, then 2, tasks at once. Reported:

- images/s of each, and the speed-up 2 workers / 1 worker (measured in this one run);
- the same units run in this process with one thread (no Ray) as the baseline of the overhead;
- scheduling overhead per task: driver round trip minus time inside the task, and the round trip
  of an empty task;
- whether the rows of the three runs are equal (same seed -> same rows).

Usage: python benchmarks/bench_ray.py IMAGES [--limit 32] [--steps 20] [--batch-size 2]
       [--model efficientnet_lite0] [--out benchmarks/out/ray.json]
Writes JSON and prints a table. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from advimage.bench.runner import batch_seed, image_keys, make_jobs, worker_batch
from advimage.data import discover
from advimage.distributed import LocalExecutor, ModelRef, RayExecutor, RayOptions, Unit
from advimage.engine import attacked_cache


def units(model: str, items, keys, *, steps: int, batch_size: int, seed: int, ship: bool) -> list[Unit]:
    job = make_jobs([model], ["bp"], steps=steps, queries=1, df=1, seed=seed, quantizer="smart")[0]
    out = []
    for b, start in enumerate(range(0, len(items), batch_size)):
        batch = items[start:start + batch_size]
        out.append(Unit(tag=b, model=ModelRef(model, device="cpu"), fn=worker_batch,
                        args=(job, [it.with_data() if ship else it for it in batch], keys[start:start + batch_size]),
                        kwargs=dict(seed=batch_seed(seed, model, "bp", b)), cached=attacked_cache(job.engine),
                        images=len(batch)))
    return out


def comparable(results: dict) -> list:
    rows = [r for b in sorted(results) for r in results[b][0]]
    return [(r["image"], r.get("adv_label"), r.get("success"), r.get("distortion")) for r in rows]


def timed(executor, work: list[Unit]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    results = {u.tag: r for u, r in executor.run(work)}
    return time.perf_counter() - t0, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/ray.json")
    args = p.parse_args()

    import ray

    items = discover([args.images])[: args.limit]
    keys = image_keys(items)
    kw = dict(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    n = len(items)

    torch.set_num_threads(1)
    local = LocalExecutor()
    local.model_info(ModelRef(args.model, device="cpu"))  # load outside the timing
    t_local, res_local = timed(local, units(args.model, items, keys, ship=False, **kw))
    local.close()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # warm-up: start both worker processes and load the model in each
        warm = RayExecutor(ray, RayOptions(workers=2))
        list(warm.run(units(args.model, items[:8], keys[:8], ship=True, **{**kw, "batch_size": 2})))
        loaded = sum(w["models_loaded"] for w in warm.stats.summary())

        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get(noop.remote())
        t0 = time.perf_counter()
        for _ in range(50):
            ray.get(noop.remote())
        empty_task = (time.perf_counter() - t0) / 50

        one = RayExecutor(ray, RayOptions(workers=1))
        t_one, res_one = timed(one, units(args.model, items, keys, ship=True, **kw))
        two = RayExecutor(ray, RayOptions(workers=2))
        t_two, res_two = timed(two, units(args.model, items, keys, ship=True, **kw))
    finally:
        ray.shutdown()

    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "ray": ray.__version__, "device": "cpu"},
        "settings": vars(args), "images": n, "units": len(res_two), "warm_workers_models_loaded": loaded,
        "local_1_thread": {"seconds": t_local, "images_per_s": n / t_local},
        "ray_1_worker": {"seconds": t_one, "images_per_s": n / t_one,
                         "overhead_per_task_s": one.stats.overhead_per_unit, "workers": one.stats.summary()},
        "ray_2_workers": {"seconds": t_two, "images_per_s": n / t_two,
                          "overhead_per_task_s": two.stats.overhead_per_unit, "workers": two.stats.summary()},
        "speedup_2_vs_1": t_one / t_two,
        "ray_1_worker_vs_local": t_one / t_local,
        "empty_task_round_trip_s": empty_task,
        "rows_equal": comparable(res_local) == comparable(res_one) == comparable(res_two),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"{n} images, {args.model}, BP {args.steps} steps + smart, batch {args.batch_size}, {os.cpu_count()} cores")
    print("| run | s | images/s | overhead/task (ms) |")
    print("|---|---:|---:|---:|")
    print(f"| local, 1 thread, no Ray | {t_local:.1f} | {n / t_local:.3f} | |")
    for name, key, ex in (("Ray, 1 worker", "ray_1_worker", one), ("Ray, 2 workers", "ray_2_workers", two)):
        o = ex.stats.overhead_per_unit
        print(f"| {name} | {out[key]['seconds']:.1f} | {out[key]['images_per_s']:.3f} | {1e3 * o:.1f} |")
    print(f"speed-up 2 workers / 1 worker: {out['speedup_2_vs_1']:.2f}x; Ray 1 worker / local: "
          f"{out['ray_1_worker_vs_local']:.3f}x; empty task round trip {1e3 * empty_task:.2f} ms; "
          f"rows equal: {out['rows_equal']}")


if __name__ == "__main__":
    main()
