"""P2: how much of the local model's speed survives inside the pipeline?

The same images are labeled twice on the same machine, in one run:

* **Tight loop**: the images' bytes already in memory; per image decode, preprocess and run
  EfficientNet-Lite0 (onnxruntime, ``IMAGELABELS_LOCAL_THREADS`` intra-op threads) and map the
  logits to labels (:func:`imagelabels.labelers.local.detect_labels`): the model with nothing
  around it.
* **Pipeline**: the production batch code (:func:`imagelabels.pipeline.batch.process_batch`) over the
  same images stored in S3 (moto server): HEAD, existence check, GET + preflight (full decode),
  the local labeler, the near-duplicate check, bulk indexing, failure bookkeeping.

The engine is ``--engine``: ``opensearch`` (default; a real OpenSearch 2.19 node, what the
pipeline's searches cost in production) or ``elasticsearch`` (noida-db, the embedded default: it
scans every document per search, so the per-image near-duplicate check grows with the index
and the ratio says more about noida-db than about the pipeline).

Both run the ``labels`` feature; ``--features labels,moderation`` compares the default feature
set against both models in the loop. Prints images/s for each and the ratio (target >= 80 %).

    .venv/bin/python benchmarks/p2_local_labeler.py --images 500 --features labels,moderation
    .venv/bin/python benchmarks/p2_local_labeler.py --images 500 --engine elasticsearch
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SAMPLES, Stopwatch, embedded_stack, machine, table, upload

BUCKET = "p2-images"


def photo_variants(count: int, seed: int = 1) -> dict[str, bytes]:
    """``count`` distinct JPEG photos (random crops of the sample photos, about 640x480)."""
    from PIL import Image

    rng = random.Random(seed)
    sources = []
    for path in sorted(SAMPLES.glob("*.*")):
        if path.suffix.lower() in {".png", ".jpg"}:
            with Image.open(path) as image:
                sources.append(image.convert("RGB").resize((800, 600)))
    bodies = {}
    for i in range(count):
        image = sources[i % len(sources)]
        left, top = rng.randint(0, 160), rng.randint(0, 120)
        buffer = io.BytesIO()
        image.crop((left, top, left + 640, top + 480)).save(buffer, "JPEG", quality=90)
        bodies[f"photos/{i:05d}.jpg"] = buffer.getvalue()
    return bodies


def tight_loop(bodies: list[bytes], features: tuple[str, ...], *, extras: bool = True) -> float:
    """Seconds to label every image with the models alone: the classifier (with its pooled
    features kept as the compact embedding when ``extras``), the person detector (when it is on
    and ``extras``) and, if asked, the moderation model. ``extras=False`` is the model work of a
    labeler without Person and embedding (before issue 14), for the per-image cost comparison."""
    from PIL import Image

    from imagelabels.fingerprints import compact_embedding, normalized
    from imagelabels.labelers.local import detect_labels, detect_moderation_labels
    from imagelabels.labelers.person import detect_people, person_enabled

    people = extras and person_enabled()
    with Stopwatch() as watch:
        for body in bodies:
            with Image.open(io.BytesIO(body)) as image:
                rgb = image.convert("RGB")
            pooled: list[Any] = []
            detect_labels(rgb, min_confidence=70, max_labels=50, features_out=pooled if extras else None)
            if pooled:
                compact_embedding(normalized(pooled[0]))
            if people:
                detect_people(rgb)
            if "moderation" in features:
                detect_moderation_labels(rgb, min_confidence=50)
    return watch.seconds


def pipeline(stack: Any, features: tuple[str, ...], batch_size: int) -> tuple[float, int]:
    """Seconds for the production batch code to label and index every uploaded image."""
    from imagelabels.engine.indexing import ensure_indices
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.local import LocalLabeler
    from imagelabels.pipeline.batch import RunContext, process_batch
    from imagelabels.sources.listing import list_objects_in_window

    s3, es = stack.boto3_client("s3"), stack.elasticsearch()
    ensure_indices(es)
    now = datetime.now(UTC)
    listed = list(list_objects_in_window(s3, BUCKET, "", now - timedelta(hours=1), now + timedelta(hours=1)))
    labeler = LocalLabeler(LabelingSettings(features=features))
    labeled = 0
    with Stopwatch() as watch:
        for start in range(0, len(listed), batch_size):
            report = process_batch(
                s3_client=s3,
                es=es,
                labeler=labeler,
                bucket=BUCKET,
                objects=listed[start : start + batch_size],
                run=RunContext("p2_benchmark", "p2"),
            )
            labeled += report.labeled
    return watch.seconds, labeled


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--features", default="labels", help="comma-separated: labels[,moderation]")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--engine",
        choices=("opensearch", "elasticsearch"),
        default="opensearch",
        help="opensearch: a real node (default); elasticsearch: noida-db (scans every document)",
    )
    args = parser.parse_args()
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())

    from imagelabels.labelers.local import LocalLabeler
    from imagelabels.labelers.local_models import local_threads

    print(
        f"P2 · {machine()} · features {','.join(features)} · {local_threads()} onnxruntime threads"
        f" · engine {args.engine}"
    )
    bodies = photo_variants(args.images)
    tight_loop(list(bodies.values())[:10], features)  # load the models once, outside both timings
    with embedded_stack(args.engine) as stack:
        upload(stack.boto3_client("s3"), BUCKET, bodies)
        loop_seconds = tight_loop(list(bodies.values()), features)
        pipe_seconds, labeled = pipeline(stack, features, args.batch_size)
        before_seconds = tight_loop(list(bodies.values()), features, extras=False)
    from imagelabels.labelers import LabelingSettings
    from imagelabels.pipeline.batch import batch_concurrency

    threads = batch_concurrency(LocalLabeler(LabelingSettings()))
    loop_rate, pipe_rate = args.images / loop_seconds, args.images / pipe_seconds
    print(
        table(
            [
                ("images", f"{args.images} JPEG photos, 640x480"),
                ("tight loop", f"{loop_seconds:.1f} s, {loop_rate:.1f} images/s"),
                (
                    "pipeline",
                    f"{pipe_seconds:.1f} s, {pipe_rate:.1f} images/s ({labeled} labeled, {threads} threads)",
                ),
                ("pipeline / tight loop", f"{pipe_rate / loop_rate:.0%}"),
                (
                    "model work per image",
                    f"{1000 * loop_seconds / args.images:.1f} ms with Person + embedding, "
                    f"{1000 * before_seconds / args.images:.1f} ms without "
                    f"({loop_seconds / before_seconds:.2f}x)",
                ),
            ]
        )
    )
    print(
        f"P2 result: the pipeline runs at {pipe_rate / loop_rate:.0%} of the model's tight loop (target >= 80%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
