"""The workload of the distributed run and its checks: varied small images uploaded within one
hour's interval, then what Elasticsearch and Airflow must show afterwards.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

UPLOAD_THREADS = 16


def image_bytes(index: int) -> tuple[bytes, str, str]:
    """A distinct, valid small image: JPEG or PNG, 96-224 px, a gradient and a few shapes
    (distinct bytes, so distinct ETags and document ids). Returns (body, extension, content type)."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    width, height = rng.randrange(96, 225), rng.randrange(96, 225)
    base = tuple(rng.randrange(256) for _ in range(3))
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image = Image.blend(image, Image.new("RGB", (width, height), base), 0.6)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(1, 5)):
        x0, y0 = rng.randrange(width // 2), rng.randrange(height // 2)
        box = (x0, y0, x0 + rng.randrange(8, width // 2), y0 + rng.randrange(8, height // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    draw.text((4, 4), f"#{index}", fill=(255, 255, 255))
    buffer = io.BytesIO()
    if index % 3 == 2:
        image.save(buffer, "PNG", optimize=False)
        return buffer.getvalue(), "png", "image/png"
    image.save(buffer, "JPEG", quality=rng.randrange(70, 95))
    return buffer.getvalue(), "jpg", "image/jpeg"


def generate_images(count: int, prefix: str) -> dict[str, tuple[bytes, str]]:
    """``count`` images keyed by S3 key -> (body, content type)."""
    images = {}
    for index in range(count):
        body, extension, content_type = image_bytes(index)
        images[f"{prefix}{index:06d}.{extension}"] = (body, content_type)
    return images


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _wait_out_hour_end(margin: timedelta) -> None:
    """Sleep into the next hour when the uploads could straddle the boundary."""
    now = datetime.now(UTC)
    next_hour = hour_start(now) + timedelta(hours=1)
    if next_hour - now < margin:
        pause = (next_hour - now).total_seconds() + 1
        print(f"the hour ends in {pause:.0f}s: waiting so every upload lands in one interval", flush=True)
        time.sleep(pause)


def upload_within_one_hour(s3: Any, bucket: str, images: dict[str, tuple[bytes, str]]) -> datetime:
    """Upload every image so that all ``LastModified`` stamps fall in one hour; returns its start.

    The listing DAG takes exactly ``[hour, hour + 1h)``: an upload that crossed the hour would be
    missed by the run (correctly), so a straddling upload is deleted and redone in the new hour.
    """
    s3.create_bucket(Bucket=bucket)
    for _attempt in range(2):
        _wait_out_hour_end(timedelta(minutes=3))
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(
                pool.map(
                    lambda item: s3.put_object(
                        Bucket=bucket, Key=item[0], Body=item[1][0], ContentType=item[1][1]
                    ),
                    images.items(),
                )
            )
        stamps = {o["Key"]: o["LastModified"] for o in list_objects(s3, bucket)}
        hours = {hour_start(stamp) for stamp in stamps.values()}
        if set(stamps) != set(images):
            raise RuntimeError(f"uploaded {len(images)} objects but the bucket lists {len(stamps)}")
        if len(hours) == 1:
            return hours.pop()
        print("the uploads straddled an hour: uploading again in the new hour", flush=True)
        for chunk in range(0, len(stamps), 1000):
            keys = [{"Key": key} for key in list(stamps)[chunk : chunk + 1000]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    raise RuntimeError("could not upload every image within one hour")


def list_objects(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every object of ``bucket`` (all pages)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj for page in pages for obj in page.get("Contents", [])]


@dataclass
class Verdict:
    """What the run must show; ``problems`` empty means green."""

    problems: list[str] = field(default_factory=list)
    per_worker: dict[str, int] = field(default_factory=dict)

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


def indexed_documents(es: Any, bucket: str, expected: int) -> list[dict[str, Any]]:
    """Every document of ``bucket`` in the alias, with its id (one search; the workload is far
    below the 10,000-hit window)."""
    from imagelabels.documents import INDEX_ALIAS

    es.indices.refresh(index=INDEX_ALIAS)
    response = es.search(
        index=INDEX_ALIAS,
        query={"term": {"s3bucket": bucket}},
        size=max(expected * 2, 10),
        source=["s3key", "s3bucket", "labeler", "airflow"],
        track_total_hits=True,
    )
    return [{"_id": hit["_id"], **hit["_source"]} for hit in response["hits"]["hits"]]


def failure_reasons(es: Any, bucket: str) -> Counter[str]:
    """Failure records of ``bucket`` by reason (printed when documents are missing)."""
    from imagelabels.documents import FAILURES_INDEX

    if not es.indices.exists(index=FAILURES_INDEX):
        return Counter()
    es.indices.refresh(index=FAILURES_INDEX)
    hits = es.search(index=FAILURES_INDEX, query={"term": {"s3bucket": bucket}}, size=1000)["hits"]["hits"]
    return Counter(str(hit["_source"].get("reason")) for hit in hits)


def check_documents(verdict: Verdict, documents: list[dict[str, Any]], uploaded: set[str]) -> None:
    """Every upload indexed exactly once: counts, key sets and id uniqueness."""
    keys = Counter(doc["s3key"] for doc in documents)
    ids = Counter(doc["_id"] for doc in documents)
    verdict.expect(len(documents) == len(uploaded), f"{len(documents)} documents for {len(uploaded)} uploads")
    missing, extra = uploaded - set(keys), set(keys) - uploaded
    verdict.expect(not missing, f"{len(missing)} uploads not indexed, e.g. {sorted(missing)[:5]}")
    verdict.expect(not extra, f"{len(extra)} documents for keys never uploaded, e.g. {sorted(extra)[:5]}")
    duplicated = [key for key, n in keys.items() if n > 1]
    verdict.expect(not duplicated, f"{len(duplicated)} keys indexed more than once, e.g. {duplicated[:5]}")
    repeated_ids = [doc_id for doc_id, n in ids.items() if n > 1]
    verdict.expect(not repeated_ids, f"{len(repeated_ids)} repeated document ids")
    labelers = Counter(doc.get("labeler") for doc in documents)
    verdict.expect(set(labelers) <= {"rekognition"}, f"documents by labeler: {dict(labelers)}")


def check_workers(
    verdict: Verdict, task_instances: list[dict[str, Any]], task_id: str, workers: list[str]
) -> None:
    """Every mapped instance succeeded, and each worker ran at least one of them."""
    mapped = [ti for ti in task_instances if ti["task_id"] == task_id]
    states = Counter(ti["state"] for ti in mapped)
    verdict.per_worker = dict(sorted(Counter(ti.get("hostname") or "?" for ti in mapped).items()))
    verdict.expect(bool(mapped), f"no {task_id} task instances")
    verdict.expect(set(states) == {"success"}, f"{task_id} states: {dict(states)}")
    idle = [name for name in workers if verdict.per_worker.get(name, 0) == 0]
    verdict.expect(not idle, f"{task_id} never ran on {idle}; split: {verdict.per_worker}")
    strangers = set(verdict.per_worker) - set(workers)
    verdict.expect(not strangers, f"{task_id} ran on unknown hosts {sorted(strangers)}")
