"""Decode memory: peak RSS of one worker process labeling a batch of huge images.

A red team found that a 1 MB, 15,800 x 15,800 RGBA PNG (under the 250 MP header cap) took one
labeling task to 4.2 GB, and that a batch on 16 threads could need tens of GB. This benchmark
labels one batch through the production code (:func:`imagelabels.pipeline.batch.process_batch`: HEAD,
existence check, GET + preflight, label, bulk index) in a **fresh worker process** per path, at the
path's default concurrency, and prints that process's peak resident set:

* **local**: the local labeler (EfficientNet-Lite0 on onnxruntime; preflight keeps pixels), at
  :func:`~imagelabels.pipeline.batch.batch_concurrency` (cores / intra-op threads, at least 2);
* **rekognition**: the Rekognition labeler against the stand-in (canned labels, its own process,
  not measured), 16 threads: what preflight costs when nothing keeps pixels.

The batch (moto server, noida-db, all on loopback): ``--pngs`` 15,800 x 15,800 RGBA PNGs
(about 1.1 MB each, written row by row so the parent never holds their pixels), ``--near-cap``
images just under the 50 MP full-decode cap that must be converted (7,000 x 7,000 RGBA PNGs with
an EXIF rotation, 8,000 x 6,000 WebPs: what the decode budget has to bound once the caps let
them through), three large JPEGs (16,000 x 12,000 and 12,000 x 9,000 baseline, 12,000 x 9,000
progressive) and ``--photos`` 640 x 480 photos. ``--compare-unbounded`` runs each path again
with the budget set out of reach, to show what the budget itself saves. The worker labels one
photo first (models loaded); "floor" is its RSS then, "peak" its ``VmHWM`` at the end (the
lifetime peak), "growth" their difference.

The machine is shared and has no swap: the parent watches the worker's RSS and kills it once it
passes ``--rss-limit-mb`` (default 9,000), reporting "stopped above" instead of a peak.

``--calibrate`` also decodes each kind of image alone, each in a fresh process, through
:func:`imagelabels.preflight.checks.prepare`, and prints the measured growth next to preflight's
header-based estimate (when the code has one): the estimate must stay above the measurement.

    .venv/bin/python benchmarks/decode_memory.py                    # both paths
    .venv/bin/python benchmarks/decode_memory.py --paths local --calibrate --compare-unbounded
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import queue
import struct
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, current_rss_kb, embedded_stack, machine, table, upload

BUCKET = "decode-memory"
BOMB_SIDE = 15_800
MB = 1024 * 1024


def load_average() -> str:
    """The 1/5/15-minute load average (the machine is shared: figures need it next to them)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def process_rss_mb(pid: int) -> float:
    """Resident set of another process, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- the images -----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = BOMB_SIDE, seed: int = 0) -> bytes:
    """A ``side`` x ``side`` 8-bit RGBA PNG of four colour bands (one half-transparent, one fully
    transparent), compressed row by row: about 1.1 MB for 250 MP, never held as pixels here."""
    colours = [(200, 30, 30, 255), (30, 200, 30, 255), (30, 30, 200, 128), (240, 240, 240, 0)]
    rows = []
    for band in range(4):
        row = bytearray()
        for quarter in range(4):
            width = side // 4 + (side % 4 if quarter == 3 else 0)
            row += bytes(colours[(quarter + band + seed) % 4]) * width
        rows.append(b"\0" + bytes(row))  # filter type 0 (None)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(rows[y * 4 // side]) for y in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def smooth_jpeg(width: int, height: int, *, progressive: bool = False) -> bytes:
    """A large photo-like JPEG (smooth gradients, a few MB at quality 85)."""
    from PIL import Image

    ramp = Image.linear_gradient("L")
    bands = [
        ramp.resize((width, height), Image.Resampling.BILINEAR),
        ramp.rotate(90).resize((width, height), Image.Resampling.BILINEAR),
        ramp.rotate(45).resize((width, height), Image.Resampling.BILINEAR),
    ]
    image = Image.merge("RGB", bands)
    del bands
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85, progressive=progressive)
    return buffer.getvalue()


def photos(count: int) -> dict[str, bytes]:
    """``count`` distinct 640 x 480 JPEG photos (crops of the sample photos, as P2 makes them)."""
    from p2_local_labeler import photo_variants

    return {f"photos/{index:03d}.jpg": body for index, (_, body) in enumerate(photo_variants(count).items())}


def near_cap_images(count: int) -> dict[str, tuple[bytes, str]]:
    """The dearest images the caps still admit (just under 50 MP, converted, so nothing is sent
    as it is): 7,000 x 7,000 RGBA PNGs with an EXIF rotation and 8,000 x 6,000 WebPs (libwebp
    needs 16 bytes a pixel). They are what the budget, not a cap, has to bound."""
    from PIL import Image

    made: dict[str, tuple[bytes, str]] = {}
    if count <= 0:
        return made
    ramp = Image.linear_gradient("L")
    exif = Image.Exif()
    exif[0x0112] = 6
    side = 7_000
    across, down = ramp.resize((side, side)), ramp.rotate(90).resize((side, side))
    rgba = Image.merge("RGBA", [across, down, across, down])  # alpha from 0 to 255, top to bottom
    del across, down
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG", compress_level=1, exif=exif.tobytes())
    png = buffer.getvalue()
    del rgba
    size = (8_000, 6_000)
    rgb = Image.merge("RGB", [ramp.resize(size), ramp.rotate(90).resize(size), ramp.rotate(45).resize(size)])
    buffer = io.BytesIO()
    rgb.save(buffer, "WEBP", quality=80)
    webp = buffer.getvalue()
    del rgb
    for index in range(count):
        if index % 2 == 0:
            made[f"near-cap/rgba-{side}-{index}.png"] = (png, f"PNG RGBA {side}x{side} rotated")
        else:
            made[f"near-cap/rgb-8000x6000-{index}.webp"] = (webp, "WebP 8000x6000")
    return made


def batch_images(pngs: int, near_cap: int, photo_count: int) -> tuple[dict[str, bytes], dict[str, str]]:
    """The batch: key -> bytes, and key -> a short description of its kind."""
    bodies: dict[str, bytes] = {}
    kinds: dict[str, str] = {}
    for index in range(pngs):
        key = f"bombs/rgba-{BOMB_SIDE}-{index}.png"
        bodies[key], kinds[key] = bomb_png(seed=index), f"PNG RGBA {BOMB_SIDE}x{BOMB_SIDE}"
    for key, (body, kind) in near_cap_images(near_cap).items():
        bodies[key], kinds[key] = body, kind
    for width, height, progressive in (
        (16_000, 12_000, False),
        (12_000, 9_000, False),
        (12_000, 9_000, True),
    ):
        name = "progressive" if progressive else "baseline"
        key = f"large/{name}-{width}x{height}.jpg"
        bodies[key] = smooth_jpeg(width, height, progressive=progressive)
        kinds[key] = f"JPEG {name} {width}x{height}"
    for key, body in photos(photo_count).items():
        bodies[key], kinds[key] = body, "JPEG photo 640x480"
    return bodies, kinds


# --- the worker process ---------------------------------------------------------------------------


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _budget_figures() -> dict[str, Any]:
    """The decode budget's capacity and the most it ever had reserved (absent before the fix)."""
    try:
        from imagelabels.preflight.decode_budget import process_budget
    except ImportError:
        return {}
    budget = process_budget()
    return {"capacity_mb": budget.capacity / MB, "peak_reserved_mb": budget.peak_reserved / MB}


def _worker(path: str, urls: dict[str, str], env: dict[str, str], answers: Any) -> None:
    """Label the whole bucket in one batch, as one mapped task of one worker process does."""
    os.environ.update(env)
    import boto3

    from imagelabels.engine import from_url
    from imagelabels.labelers import LabelingSettings
    from imagelabels.pipeline.batch import RunContext, batch_concurrency, process_batch
    from imagelabels.preflight.checks import fetch_and_prepare
    from imagelabels.sources.listing import list_objects_in_window

    creds = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=urls["moto"], **creds)
    es = from_url(urls["es"], timeout=120)
    settings = LabelingSettings(features=("labels",))
    labeler: Any
    if path == "local":
        from imagelabels.labelers.local import LocalLabeler

        labeler = LocalLabeler(settings)
    else:
        from imagelabels.labelers.ratelimit import limiter_from_settings
        from imagelabels.labelers.rekognition import RekognitionLabeler

        rekognition = boto3.client("rekognition", endpoint_url=urls["standin"], **creds)
        labeler = RekognitionLabeler(rekognition, settings, limiter_from_settings("us-east-1"))
    now = datetime.now(UTC)
    listed = list(list_objects_in_window(s3, BUCKET, "", now - timedelta(hours=1), now + timedelta(hours=1)))
    warm = next(o for o in listed if o.key.startswith("photos/"))
    from imagelabels.sources.objects import describe_object

    labeler.label(fetch_and_prepare(s3, describe_object(s3, BUCKET, warm), keep_pixels=path == "local"))
    floor_kb = current_rss_kb()
    threads = batch_concurrency(labeler)
    answers.put({"event": "floor", "floor_mb": floor_kb / 1024, "threads": threads})
    with Stopwatch() as watch:
        report = process_batch(
            s3_client=s3,
            es=es,
            labeler=labeler,
            bucket=BUCKET,
            objects=listed,
            run=RunContext("decode_memory_benchmark", f"decode-memory-{path}"),
            reprocess=True,
        )
    answers.put(
        {
            "event": "done",
            "peak_mb": _vm_hwm_kb() / 1024,
            "seconds": watch.seconds,
            "report": report.as_xcom(),
            **_budget_figures(),
        }
    )


def run_path(
    path: str, urls: dict[str, str], env: dict[str, str], limit_mb: float, label: str | None = None
) -> dict[str, Any]:
    """One fresh worker process for ``path``; its figures, or how far it got before the limit."""
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    process = context.Process(target=_worker, args=(path, urls, env, answers), daemon=True)
    process.start()
    result: dict[str, Any] = {"path": label or path}
    watched_peak = 0.0
    try:
        while True:
            rss = process_rss_mb(process.pid or 0)
            watched_peak = max(watched_peak, rss)
            if rss > limit_mb:
                process.kill()
                result["stopped_above_mb"] = limit_mb
                break
            try:
                answer = answers.get(timeout=0.02)
            except queue.Empty:
                if not process.is_alive():
                    result["died"] = f"exit code {process.exitcode}"
                    break
                continue
            result.update(answer)
            if answer["event"] == "done":
                break
    finally:
        process.join(timeout=30)
    result["watched_peak_mb"] = watched_peak
    return result


# --- calibration: one image, one fresh process ----------------------------------------------------


def _calibrate_one(body: bytes, keep_pixels: bool, answers: Any) -> None:
    from imagelabels.documents import ObjectInfo
    from imagelabels.errors import LabelingError
    from imagelabels.preflight import checks as preflight

    obj = ObjectInfo("b", "k", len(body), "e", datetime.now(UTC))
    preflight.prepare(obj, _tiny_png(), keep_pixels=keep_pixels)  # Pillow's plugins, the HEIF opener
    estimate = getattr(preflight, "decode_cost", None)
    try:
        estimated = estimate(body, keep_pixels=keep_pixels) if estimate else None
    except LabelingError:
        estimated = 0  # rejected from the header: nothing is decoded
    floor_kb = current_rss_kb()
    with open("/proc/self/clear_refs", "w") as clear:  # reset VmHWM to the RSS now
        clear.write("5")
    try:
        prepared = preflight.prepare(obj, body, keep_pixels=keep_pixels)
        outcome = f"sent {prepared.size[0]}x{prepared.size[1]}"
    except LabelingError as error:
        outcome = f"rejected: {error.reason}"
    answers.put({"growth_mb": (_vm_hwm_kb() - floor_kb) / 1024, "estimated": estimated, "outcome": outcome})


def _tiny_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, "PNG")
    return buffer.getvalue()


def calibrate(samples: dict[str, bytes]) -> list[tuple[str, str]]:
    """Measured decode growth vs the header-based estimate, per kind and path, one process each."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for kind, body in samples.items():
        for keep_pixels in (False, True):
            answers = context.Queue()
            process = context.Process(target=_calibrate_one, args=(body, keep_pixels, answers), daemon=True)
            process.start()
            answer = answers.get(timeout=600)
            process.join()
            estimated = answer["estimated"]
            estimate = "n/a (no estimate in this code)" if estimated is None else f"{estimated / MB:,.1f} MB"
            rows.append(
                (
                    f"{kind} ({'local' if keep_pixels else 'rekognition'})",
                    f"measured {answer['growth_mb']:,.1f} MB, estimated {estimate}; {answer['outcome']}",
                )
            )
    return rows


# --- main -----------------------------------------------------------------------------------------


def _describe(result: dict[str, Any]) -> list[tuple[str, str]]:
    name = result["path"]
    if "stopped_above_mb" in result:
        return [(name, f"STOPPED: RSS passed {result['stopped_above_mb']:,.0f} MB (the safety limit)")]
    if "died" in result:
        return [(name, f"worker died ({result['died']}), watched peak {result['watched_peak_mb']:,.0f} MB")]
    report = result["report"]
    rows = [
        (
            name,
            f"peak {result['peak_mb']:,.0f} MB (floor {result['floor_mb']:,.0f} MB, growth "
            f"{result['peak_mb'] - result['floor_mb']:,.0f} MB), {result['threads']} threads, "
            f"{result['seconds']:.1f} s",
        ),
        (
            f"{name} outcome",
            f"labeled {report['labeled']}, indexed {report['indexed']}, failed {report['failed']}",
        ),
    ]
    if "capacity_mb" in result:
        rows.append(
            (
                f"{name} decode budget",
                f"{result['capacity_mb']:,.0f} MB; most reserved at once {result['peak_reserved_mb']:,.0f} MB",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pngs", type=int, default=4, help="15,800 x 15,800 RGBA PNGs in the batch")
    parser.add_argument("--near-cap", type=int, default=4, help="PNGs and WebPs just under the 50 MP cap")
    parser.add_argument("--photos", type=int, default=20, help="640 x 480 photos in the batch")
    parser.add_argument(
        "--compare-unbounded",
        action="store_true",
        help="run each path again with IMAGELABELS_DECODE_BUDGET_MB=1000000: what the budget itself saves",
    )
    parser.add_argument("--paths", default="local,rekognition", help="comma-separated: local,rekognition")
    parser.add_argument("--rss-limit-mb", type=float, default=9000.0, help="kill the worker above this RSS")
    parser.add_argument("--calibrate", action="store_true", help="also estimate vs measure per image kind")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]

    print(f"Decode memory · {machine()} · {load_average()}", flush=True)
    with Stopwatch() as making:
        bodies, kinds = batch_images(args.pngs, args.near_cap, args.photos)
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    print(
        f"made {len(bodies)} images in {making.seconds:.0f} s: "
        + ", ".join(f"{n} x {k}" for k, n in counts.items())
    )
    results = []
    with embedded_stack() as stack:
        from imagelabels.devstack.standin import StandInConfig, start_standin_process
        from imagelabels.engine.indexing import ensure_indices

        upload(stack.boto3_client("s3"), BUCKET, bodies, threads=4)
        ensure_indices(stack.elasticsearch())
        standin_url, stop_standin = start_standin_process(
            StandInConfig(labels="canned", latency_ms=20, s3_endpoint_url=stack.moto_url)
        )
        try:
            urls = {"moto": stack.moto_url, "es": stack.es_url, "standin": standin_url}
            for path in paths:
                print(f"running {path} ... ({load_average()})", flush=True)
                env = {"IMAGELABELS_RATE_LIMIT_URL": "memory://"}
                results.append(run_path(path, urls, env, args.rss_limit_mb))
                if args.compare_unbounded:
                    print(
                        f"running {path} with an unbounded decode budget ... ({load_average()})", flush=True
                    )
                    env = {**env, "IMAGELABELS_DECODE_BUDGET_MB": "1000000"}
                    results.append(
                        run_path(path, urls, env, args.rss_limit_mb, label=f"{path}, unbounded budget")
                    )
                time.sleep(1)
        finally:
            stop_standin()
    print("\nPeak RSS of one worker process labeling the batch")
    print(table([row for result in results for row in _describe(result)]))
    if args.calibrate:
        samples: dict[str, bytes] = {}
        for key, kind in kinds.items():
            samples.setdefault(kind, bodies[key])
        print("\nOne image alone, fresh process each: growth of the peak RSS during prepare()")
        print(table(calibrate(samples)))
    print(f"\n{load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
