"""Distributed throughput: the hourly DAG on CeleryExecutor with 1 worker, then with 2.

Each run is a full ``make test-distributed`` run (scripts/distributed_run.py): fresh PostgreSQL
database, Redis broker, moto, noida-db, the Rekognition stand-in with a generous quota (so Airflow
is what is measured), api-server, scheduler, dag-processor, triggerer and N Celery workers with
the same slots each. Same image count, batch size and slots per worker in both runs; the figure is
images / (DAG run end - start). Prints both rates and their ratio; never asserts timings, but says
if a run was red (a red run's figure means nothing).

On one machine the workers share its cores: the ratio shows what a second worker adds *here*
(more task slots, same CPUs), not what a second host would.

    .venv/bin/python benchmarks/distributed_throughput.py                 # 1,000 images
    .venv/bin/python benchmarks/distributed_throughput.py --images 2000 --concurrency 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from _common import machine, table

from distributed_run import RunOptions, RunResult, interrupt_on_signals, report, run_distributed


def _row(result: RunResult) -> tuple[str, str]:
    split = ", ".join(f"{name} {count}" for name, count in result.per_worker.items())
    verdict = "green" if not result.problems else "RED: " + "; ".join(result.problems)
    return (
        f"{result.workers} worker{'s' if result.workers > 1 else ''} x {result.slots} slots",
        f"{result.images_per_second:6.2f} images/s  ({result.run_seconds:.1f} s; batches: {split}; {verdict})",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument(
        "--concurrency", type=int, default=RunOptions.concurrency, help="task slots per worker"
    )
    parser.add_argument("--batch-size", type=int, default=RunOptions.batch_size)
    parser.add_argument(
        "--same-slots",
        action="store_true",
        help="also run 1 worker with twice the slots: what distribution costs at equal slots",
    )
    args = parser.parse_args()
    interrupt_on_signals()
    base = RunOptions(images=args.images, concurrency=args.concurrency, batch_size=args.batch_size)

    print(f"Distributed throughput · {machine()}")
    print(f"{args.images} images, batches of {args.batch_size}, {args.concurrency} slots per worker\n")
    layouts = [(1, args.concurrency), (2, args.concurrency)]
    if args.same_slots:
        layouts.append((1, 2 * args.concurrency))
    results = []
    for workers, slots in layouts:
        print(f"--- {workers} worker(s) x {slots} slots ---", flush=True)
        result = run_distributed(dataclasses.replace(base, workers=workers, concurrency=slots))
        print(report(result), flush=True)
        results.append(result)
    one, two = results[:2]
    print()
    print(table([_row(result) for result in results]))
    ratio = two.images_per_second / one.images_per_second if one.images_per_second else float("nan")
    print(f"\nRatio 2 workers / 1 worker (same slots per worker): {ratio:.2f}x")
    if args.same_slots:
        same = results[2]
        print(
            f"Ratio 2 x {args.concurrency} slots / 1 x {2 * args.concurrency} slots: "
            f"{two.images_per_second / same.images_per_second:.2f}x"
        )
    return 0 if not any(result.problems for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
