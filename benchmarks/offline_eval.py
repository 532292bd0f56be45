"""Offline labels people search for: the local labeler over the photos of ``benchmarks/eval_set/``.

Runs the real :class:`~imagelabels.labelers.local.LocalLabeler` path (a ``PreparedImage`` with
pixels, default :class:`~imagelabels.labelers.base.LabelingSettings`: min confidence 70, labels +
moderation) on each photo, and once more at min confidence 0, and prints per photo and in total:

* **top-5 ok** (min 0): one of the five most confident labels is acceptable (``acceptable`` of the
  manifest, or a parent of one: parents count);
* **best@5** (min 0): one of the photo's ``best`` labels is among those five;
* **best kept** (defaults): one of its ``best`` labels survives the default settings;
* **no labels** (defaults): photos left unfindable;
* **wrong** (defaults): labels that are not acceptable, of all labels given;
* **Person on photos with people / without** (defaults), from the labeler's output, so it moves
  once a person detector is wired into the labeler;
* **moderation false positives** (defaults): photos with any moderation label (none should have);
* **ms/image**: the labeler's ``label`` call at defaults (labels + moderation), median and mean.

``--model PATH`` runs another ImageNet-1k ONNX classifier (EfficientNet-Lite1/2 exports, input
size read from the graph) through the same path; ``--raw`` turns the confidence calibration off
(the figures before calibration); ``--fit`` prints the calibration constants that the photos'
(label, probability, acceptable?) pairs give, by logistic regression on the log-odds.

    .venv/bin/python benchmarks/offline_eval.py
    .venv/bin/python benchmarks/offline_eval.py --raw --fit
    .venv/bin/python benchmarks/offline_eval.py --model /tmp/efficientnet-lite1.onnx
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine

EVAL_SET = ROOT / "benchmarks" / "eval_set"


def load_photos(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["photos"])


def prepared(path: Path) -> Any:
    """The photo as preflight hands it to the local labeler (bytes + decoded pixels)."""
    from PIL import Image

    from imagelabels.documents import ObjectInfo
    from imagelabels.preflight.prepared import PreparedImage

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        pixels = opened.convert("RGB")
    obj = ObjectInfo(
        bucket="eval",
        key=path.name,
        size=len(data),
        etag='"eval"',
        last_modified=datetime(2024, 1, 1, tzinfo=UTC),
        width=pixels.width,
        height=pixels.height,
    )
    return PreparedImage(
        obj=obj, data=data, data_format="JPEG", source_format="JPEG", send_s3_reference=False, pixels=pixels
    )


def accepted(photo: dict[str, Any], parents: dict[str, list[str]]) -> set[str]:
    """The photo's acceptable labels plus every parent of them."""
    names = set(photo["acceptable"]) | set(photo["best"])
    for name in list(names):
        names.update(parents.get(name, []))
    return names


def fit_platt(pairs: list[tuple[float, bool]]) -> tuple[float, float]:
    """``a, b`` maximising the likelihood of ``P(ok) = sigmoid(a * logit(p) + b)`` (Newton)."""
    import numpy as np

    p = np.clip(np.array([pair[0] for pair in pairs]), 1e-6, 1 - 1e-6)
    y = np.array([1.0 if pair[1] else 0.0 for pair in pairs])
    x = np.log(p) - np.log1p(-p)
    features = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-features @ weights))
        gradient = features.T @ (y - q)
        hessian = -(features.T * (q * (1 - q))) @ features - 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(weights[0]), float(weights[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="an ImageNet-1k ONNX classifier (default: the shipped one)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="confidences without calibration (100 x probability)"
    )
    parser.add_argument("--fit", action="store_true", help="print the calibration fitted on these photos")
    parser.add_argument("--eval-set", type=Path, default=EVAL_SET)
    parser.add_argument("--quiet", action="store_true", help="totals only")
    args = parser.parse_args()

    from imagelabels.labelers import local, local_models
    from imagelabels.labelers.base import LabelingSettings
    from imagelabels.labelers.local import LocalLabeler

    if args.model is not None:
        loaded = local_models.Lazy(lambda: local_models.load_classifier(args.model))
        local.CLASSIFIER = loaded
        local_models.CLASSIFIER = loaded
    if args.raw:
        real = local.detect_labels
        local.detect_labels = lambda image, **kw: real(image, **kw, calibrated=False)  # type: ignore[assignment]

    classifier = local_models.CLASSIFIER.get()
    parents = classifier.parents
    photos = load_photos(args.eval_set)
    default = LocalLabeler(LabelingSettings())
    everything = LocalLabeler(LabelingSettings(min_confidence=0, max_labels=None, features=("labels",)))
    default.label(prepared(args.eval_set / photos[0]["file"]))  # warm-up: sessions load once

    rows = []
    timings = []
    pairs: list[tuple[float, bool]] = []
    for photo in photos:
        image = prepared(args.eval_set / photo["file"])
        started = time.perf_counter()
        result = default.label(image)
        timings.append((time.perf_counter() - started) * 1000)
        ranked = everything.label(image).labels
        ok = accepted(photo, parents)
        top5 = [label["Name"] for label in ranked[:5]]
        given = [label["Name"] for label in result.labels]
        row = {
            "file": photo["file"],
            "people": photo["people"],
            "top5_ok": any(name in ok for name in top5),
            "best5": any(name in photo["best"] for name in top5),
            "best_kept": any(name in photo["best"] for name in given),
            "none": not given,
            "wrong": [name for name in given if name not in ok],
            "given": len(given),
            "person": "Person" in given,
            "moderation": [label["Name"] for label in result.moderation_labels],
            "top": [(label["Name"], label["Confidence"]) for label in ranked[:5]],
        }
        rows.append(row)
        if args.fit:
            for label in ranked[:30]:
                pairs.append((label["Confidence"] / 100.0, label["Name"] in ok))

    def mark(flag: bool) -> str:
        return "yes" if flag else " - "

    print(f"offline labels on {len(rows)} photos of {args.eval_set.relative_to(ROOT)} · {machine()}")
    print(
        f"classifier {classifier.version} (input {classifier.input_size}) · calibration {'off' if args.raw else 'on'}"
    )
    if not args.quiet:
        print(f"  {'photo':20} top5ok best@5 kept none wrong person  top-5 at min confidence 0")
        for row in rows:
            top = ", ".join(f"{name} {confidence:.0f}" for name, confidence in row["top"])
            person = ("yes" if row["person"] else "no ") + ("*" if row["people"] else " ")
            print(
                f"  {row['file']:20} {mark(row['top5_ok']):6} {mark(row['best5']):6} {mark(row['best_kept']):4} "
                f"{mark(row['none']):4} {len(row['wrong']):2}/{row['given']:<2} {person:6}  {top}"
            )
        print("  (* = people visible)")
    with_people = [row for row in rows if row["people"]]
    without = [row for row in rows if not row["people"]]
    given_total = sum(row["given"] for row in rows)
    wrong_total = sum(len(row["wrong"]) for row in rows)
    count = len(rows)

    def share(flagged: int, total: int) -> str:
        return f"{flagged}/{total} ({100 * flagged / total:.0f} %)" if total else "0/0"

    print("totals")
    print(f"  top-5 contains an acceptable label (min 0)  {share(sum(r['top5_ok'] for r in rows), count)}")
    print(f"  best label in the top 5 (min 0)             {share(sum(r['best5'] for r in rows), count)}")
    print(f"  best label kept at defaults (min 70)        {share(sum(r['best_kept'] for r in rows), count)}")
    print(f"  photos with no label at defaults            {share(sum(r['none'] for r in rows), count)}")
    print(f"  labels at defaults that are wrong           {share(wrong_total, given_total)}")
    print(f"  labels per photo at defaults                {given_total / count:.1f}")
    print(
        f"  Person on photos with people                {share(sum(r['person'] for r in with_people), len(with_people))}"
    )
    print(
        f"  Person on photos without people             {share(sum(r['person'] for r in without), len(without))}"
    )
    print(
        f"  moderation false positives                  {share(sum(bool(r['moderation']) for r in rows), count)}"
    )
    print(
        f"  ms/image (label call, defaults)             median {statistics.median(timings):.1f} · mean {statistics.fmean(timings):.1f}"
    )
    if args.fit:
        slope, bias = fit_platt(pairs)
        print(
            f"calibration fitted on {len(pairs)} (label, confidence) pairs: slope {slope:.4f} · bias {bias:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
