"""Person detector: milliseconds per image, and how often it is right.

Times :func:`imagelabels.labelers.person.detect_people` (letterbox, BlazePose's detector on
onnxruntime with ``IMAGELABELS_LOCAL_THREADS`` intra-op threads, decoding, NMS, boxes) on every
photo of ``sample_images/`` (plus any ``--photos`` folders), after one warm-up call that loads the
session, and prints each photo's best detector score, what ``Person`` it gets, and the median /
p95 milliseconds; the bare ``session.run`` is timed too.

Then precision and recall of ``Person`` over the photos whose truth is known: a photo "has
people" when its file name is listed in :data:`PEOPLE` or passed with ``--people``; every other
photo is taken as having none (so only pass folders whose photos you have looked at). Two cuts:
the detector's own (score 0.5) and the labeler's default ``MinConfidence`` 70.

    .venv/bin/python benchmarks/person_detector.py
    .venv/bin/python benchmarks/person_detector.py --photos /tmp/skimage-data --people camera.png
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from imagelabels.labelers import person  # noqa: E402

SAMPLES = ROOT / "sample_images"
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Photos known to show people: the demo's two portraits, scikit-image's cameraman.
PEOPLE = {"astronaut.png", "grace_hopper.jpg", "camera.png"}
DEFAULT_MIN_CONFIDENCE = 70.0


def photos(folders: list[Path]) -> list[Path]:
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in SUFFIXES and path.name not in found:
                found[path.name] = path
    return list(found.values())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def precision_recall(results: dict[str, float], people: set[str], cut: float) -> tuple[str, str, str]:
    said = {name for name, value in results.items() if value >= cut}
    true_positive = len(said & people)
    precision = f"{true_positive}/{len(said)}" + (f" = {true_positive / len(said):.2f}" if said else "")
    recall = f"{true_positive}/{len(people)}" + (f" = {true_positive / len(people):.2f}" if people else "")
    wrong = ", ".join(sorted(said - people)) or "-"
    return precision, recall, wrong


def main() -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, action="append", default=[], help="another folder of photos")
    parser.add_argument("--people", default="", help="comma-separated file names that show people")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per photo")
    args = parser.parse_args()
    people_names = PEOPLE | {name for name in args.people.split(",") if name}
    paths = photos([SAMPLES, *args.photos])
    images = {}
    for path in paths:
        with Image.open(path) as opened:
            images[path.name] = opened.convert("RGB")

    started = time.perf_counter()
    detector = person.DETECTOR.get()
    load_ms = (time.perf_counter() - started) * 1000
    person.detect_people(next(iter(images.values())))  # warm-up

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(
        f"model: {person.MODEL_PATH.name} ({person.MODEL_PATH.stat().st_size / 1e6:.1f} MB), {detector.version}"
    )
    print(
        f"intra-op threads: {os.environ.get('IMAGELABELS_LOCAL_THREADS', '2 (default)')}; session load {load_ms:.0f} ms"
    )
    print()
    print(
        f"{'photo':24} {'size':>10} {'people':>6} {'best':>6} {'Person':>7} {'n':>2}  {'ms p50':>7} {'ms p95':>7}"
    )
    all_ms: list[float] = []
    sample_ms: list[float] = []
    run_ms: list[float] = []
    best_scores: dict[str, float] = {}
    person_confidence: dict[str, float] = {}
    for name, image in images.items():
        timings = []
        labels: list[dict[str, object]] = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            labels = person.detect_people(image)
            timings.append((time.perf_counter() - started) * 1000)
        tensor, _ = person.letterbox(image)
        for _ in range(args.repeat):
            started = time.perf_counter()
            detector.session.run(None, {detector.input_name: tensor})
            run_ms.append((time.perf_counter() - started) * 1000)
        detections, _ = person.detect(image, min_score=0.0)
        best_scores[name] = detections[0].score if detections else 0.0
        confidence = float(labels[0]["Confidence"]) if labels else 0.0  # type: ignore[arg-type]
        person_confidence[name] = confidence
        count = len(labels[0]["Instances"]) if labels else 0  # type: ignore[arg-type]
        all_ms.extend(timings)
        if (SAMPLES / name).exists():
            sample_ms.extend(timings)
        shown = f"{confidence:.1f}" if labels else "-"
        print(
            f"{name:24} {image.width:>4}x{image.height:<5} {'yes' if name in people_names else 'no':>6}"
            f" {best_scores[name]:6.3f} {shown:>7} {count:>2}  {statistics.median(timings):7.1f}"
            f" {percentile(timings, 0.95):7.1f}"
        )
    print()
    print(
        f"detect_people over sample_images/ ({len(sample_ms) // args.repeat} photos x {args.repeat}):"
        f" p50 {statistics.median(sample_ms):.1f} ms, p95 {percentile(sample_ms, 0.95):.1f} ms"
    )
    if len(all_ms) != len(sample_ms):
        print(
            f"detect_people over all {len(images)} photos: p50 {statistics.median(all_ms):.1f} ms,"
            f" p95 {percentile(all_ms, 0.95):.1f} ms"
        )
    print(f"session.run alone: p50 {statistics.median(run_ms):.1f} ms, p95 {percentile(run_ms, 0.95):.1f} ms")
    print()
    known_people = people_names & set(images)
    print(
        f"truth: {len(known_people)} photos with people ({', '.join(sorted(known_people))}), {len(images) - len(known_people)} without"
    )
    for label, results, cut in (
        ("detector cut 0.5 (every Person emitted)", best_scores, person.MIN_SCORE),
        (
            f"MinConfidence {DEFAULT_MIN_CONFIDENCE:.0f} (the labeler's default)",
            person_confidence,
            DEFAULT_MIN_CONFIDENCE,
        ),
    ):
        precision, recall, wrong = precision_recall(results, known_people, cut)
        print(f"{label:46} precision {precision:12} recall {recall:12} false: {wrong}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
