"""Preflight over generated bad and odd files: each is rejected with its reason or fixed.

Every case goes through :func:`fetch_and_prepare` with a fake S3 client that serves the bytes,
so the table also proves which rejections need no GET at all.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from imagelabels.documents import ObjectInfo
from imagelabels.errors import LabelingError
from imagelabels.preflight import checks as preflight
from imagelabels.preflight import decode_budget
from imagelabels.preflight.checks import (
    FIXED_DECODE_BYTES,
    JPEG_ROW_BYTES_PER_COLUMN,
    MAX_DECODED_PIXELS,
    STRIP_BYTES,
    Header,
    decode_cost,
    estimate_cost,
    fetch_and_prepare,
    pillow_bytes_per_pixel,
    prepare,
)
from imagelabels.preflight.decode_budget import DEFAULT_BUDGET_MB, DecodeBudget
from imagelabels.preflight.prepared import MAX_INLINE_BYTES, MAX_S3_OBJECT_BYTES, PIXELS_MAX_SIDE

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows where a rotation put things."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its (tiny) data does not have: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = min(1.0, longest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _truncated_jpeg() -> bytes:
    return _truncated(_encode(_noise(200, 150), "JPEG"))


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _jpeg_with_orientation(image: Image.Image, orientation: int, **options: Any) -> bytes:
    return _encode(image, "JPEG", exif=_orientation_exif(orientation), **options)


def _animated_gif() -> bytes:
    first, second = Image.new("RGB", (100, 100), RED), Image.new("RGB", (100, 100), BLUE)
    return _encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def _png_16bit() -> bytes:
    """Left half 0x8080 (128 once scaled), right half 0xFFFF; clipping would make both white."""
    values = np.full((90, 120), 0x8080, dtype=np.uint16)
    values[:, 60:] = 0xFFFF
    return _encode(Image.fromarray(values), "PNG")


def _heic(width: int = 160, height: int = 120, orientation: int = 1) -> bytes:
    """Encoded with pillow-heif directly: registering its Pillow opener here would hide a
    preflight that forgets to."""
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(_halves(width, height)).save(
        buffer, quality=90, exif=_orientation_exif(orientation)
    )
    return buffer.getvalue()


def _heif_writable() -> bool:
    try:
        return len(_heic()) > 0
    except Exception:
        return False


def _rgba_png() -> bytes:
    image = Image.new("RGBA", (120, 100), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (60, 0, 120, 100))
    return _encode(image, "PNG")


def _pixel(x: int, y: int, expected: tuple[int, int, int]) -> Callable[[Image.Image], None]:
    """A check that the decoded output has about ``expected`` at (x, y) (JPEG is lossy)."""

    def check(image: Image.Image) -> None:
        actual = image.convert("RGB").getpixel((x, y))
        assert isinstance(actual, tuple)
        assert all(abs(a - e) <= 12 for a, e in zip(actual, expected, strict=True)), (actual, expected)

    return check


def _all(*checks: Callable[[Image.Image], None]) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        for one in checks:
            one(image)

    return check


@dataclass(frozen=True)
class Case:
    """One object and what preflight must make of it.

    ``reason`` set: rejected with it (``message`` a substring of the message). Otherwise
    accepted: ``source_format``, ``as_is`` (sent as an S3 reference), ``size`` of the bytes
    sent, ``original`` (the oriented size recorded in ObjectInfo), ``transformations`` that must
    be among those recorded, and a pixel ``check`` on the decoded output.
    """

    key: str
    data: Callable[[], bytes]
    reason: str | None = None
    message: str = ""
    listed_size: int | None = None  # the size S3 reported, when it differs from the bytes
    read: bool = True  # whether preflight had to GET the object to decide
    source_format: str = ""
    as_is: bool = False
    size: tuple[int, int] = (0, 0)
    original: tuple[int, int] | None = None
    transformations: tuple[str, ...] = ()
    check: Callable[[Image.Image], None] | None = None


CASES = [
    pytest.param(
        Case("cut.jpg", _truncated_jpeg, reason="corrupt_image", message="truncated"), id="truncated-jpeg"
    ),
    pytest.param(
        Case("cut.png", lambda: _truncated(_encode(_noise(200, 150), "PNG")), reason="corrupt_image"),
        id="truncated-png",
    ),
    pytest.param(
        Case("cut.gif", lambda: _truncated(_animated_gif()), reason="corrupt_image"), id="truncated-gif"
    ),
    pytest.param(
        Case("cut.heic", lambda: _truncated(_heic()), reason="corrupt_image"),
        id="truncated-heic",
        marks=pytest.mark.skipif(not _heif_writable(), reason="this pillow-heif has no HEVC encoder"),
    ),
    pytest.param(
        Case(
            "photo.jpg",
            lambda: _encode(_halves(120, 100), "PNG"),
            source_format="PNG",
            as_is=True,
            size=(120, 100),
            check=_pixel(10, 10, RED),
        ),
        id="png-named-jpg",
    ),
    pytest.param(
        Case("notes.jpg", lambda: b"just some text, no pixels\n", reason="not_an_image"), id="text-named-jpg"
    ),
    pytest.param(
        Case("scan.jpg", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", reason="not_an_image"), id="pdf"
    ),
    pytest.param(Case("photos.zip", lambda: b"PK\x03\x04\x14\x00\x00\x00", reason="not_an_image"), id="zip"),
    pytest.param(
        Case("new.jxl", lambda: b"\xff\x0a" + bytes(64), reason="unsupported_format", message="JXL"),
        id="jpeg-xl",
    ),
    pytest.param(Case("empty.jpg", lambda: b"", reason="empty_object", read=False), id="zero-bytes"),
    pytest.param(
        Case(
            "huge.png",
            lambda: b"",
            listed_size=MAX_S3_OBJECT_BYTES + 1,
            reason="object_too_large",
            read=False,
        ),
        id="over-15mb-by-listed-size",
    ),
    pytest.param(
        Case(
            "thin.png",
            lambda: _encode(Image.new("RGB", (79, 120)), "PNG"),
            reason="image_too_small",
            message="79x120 px, Rekognition needs at least 80 px per side",
        ),
        id="79px",
    ),
    pytest.param(
        Case(
            "tiny.jpg",
            lambda: _encode(Image.new("RGB", (80, 80), RED), "JPEG"),
            source_format="JPEG",
            as_is=True,
            size=(80, 80),
        ),
        id="80px",
    ),
    pytest.param(
        Case(
            "strip.png",
            lambda: _encode(Image.new("RGB", (20_000, 100)), "PNG"),
            reason="image_too_small",
            message="would be 10000x50 px",
        ),
        id="too-thin-once-fitted",
    ),
    pytest.param(
        Case(
            "bomb.png", lambda: _png_header_only(16_000, 16_000), reason="too_many_pixels", message="256 MP"
        ),
        id="decompression-bomb",
        marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    ),
    pytest.param(
        Case(
            "wide.png",
            lambda: _encode(_halves(10_001, 100), "PNG"),
            source_format="PNG",
            size=(10_000, 100),
            original=(10_001, 100),
            transformations=("resized:10001x100->10000x100", "converted:PNG"),
            check=_all(_pixel(10, 50, RED), _pixel(9_990, 50, BLUE)),
        ),
        id="10001px-png",
    ),
    pytest.param(
        Case(
            "panorama.jpg",
            lambda: _encode(_halves(12_000, 900), "JPEG"),
            source_format="JPEG",
            size=(10_000, 750),
            original=(12_000, 900),
            transformations=("resized:12000x900->10000x750",),
            check=_pixel(10, 10, RED),
        ),
        id="12000px-jpeg",
    ),
    pytest.param(
        Case(
            "banner.jpg",
            # decoded at 1/2 scale (draft) is 10000 px: still not sendable as it is stored
            lambda: _encode(_halves(20_000, 1_000), "JPEG"),
            source_format="JPEG",
            size=(10_000, 500),
            original=(20_000, 1_000),
            transformations=("resized:20000x1000->10000x500",),
            check=_all(_pixel(10, 250, RED), _pixel(9_990, 250, BLUE)),
        ),
        id="20000px-jpeg-draft",
    ),
    pytest.param(
        Case(
            "tower.jpg",
            # 24000 px wide as stored, so libjpeg decodes it at 1/2 scale (draft); shown upright
            lambda: _jpeg_with_orientation(_halves(24_000, 1_200), 8),
            source_format="JPEG",
            size=(500, 10_000),
            original=(1_200, 24_000),
            transformations=("exif_transpose", "resized:1200x24000->500x10000"),
            # orientation 8: displayed rotated 90° counter-clockwise, so the left (red) half is at the bottom
            check=_all(_pixel(250, 9_990, RED), _pixel(250, 10, BLUE)),
        ),
        id="24000px-rotated-jpeg-draft",
    ),
    pytest.param(
        Case(
            "anim.gif",
            _animated_gif,
            source_format="GIF",
            size=(100, 100),
            transformations=("first_frame", "converted:GIF"),
            check=_pixel(50, 50, RED),
        ),
        id="animated-gif",
    ),
    pytest.param(
        Case(
            "a.webp",
            lambda: _encode(_halves(120, 90), "WEBP", quality=95),
            source_format="WEBP",
            size=(120, 90),
            transformations=("converted:WEBP",),
            check=_pixel(10, 10, RED),
        ),
        id="webp",
    ),
    pytest.param(
        Case(
            "a.bmp",
            lambda: _encode(_halves(120, 90), "BMP"),
            source_format="BMP",
            size=(120, 90),
            transformations=("converted:BMP",),
            check=_pixel(110, 10, BLUE),
        ),
        id="bmp",
    ),
    pytest.param(
        Case(
            "a.tif",
            lambda: _encode(_halves(120, 90), "TIFF", compression="tiff_deflate"),
            source_format="TIFF",
            size=(120, 90),
            transformations=("converted:TIFF",),
            check=_pixel(10, 10, RED),
        ),
        id="tiff",
    ),
    pytest.param(
        Case(
            "print.jpg",
            lambda: _encode(Image.new("CMYK", (120, 90), (0, 255, 255, 0)), "JPEG"),
            source_format="JPEG",
            size=(120, 90),
            transformations=("cmyk_to_rgb",),
            check=_pixel(60, 45, RED),
        ),
        id="cmyk-jpeg",
    ),
    pytest.param(
        Case(
            "deep.png",
            _png_16bit,
            source_format="PNG",
            size=(120, 90),
            transformations=("16bit_to_8bit", "converted:PNG"),
            check=_all(_pixel(10, 10, (128, 128, 128)), _pixel(110, 10, (255, 255, 255))),
        ),
        id="16bit-png",
    ),
    pytest.param(
        Case(
            "phone.jpg",
            lambda: _jpeg_with_orientation(_halves(200, 100), 6),
            source_format="JPEG",
            size=(100, 200),
            original=(100, 200),
            transformations=("exif_transpose",),
            # orientation 6: displayed rotated 90° clockwise, so the left (red) half is on top
            check=_all(_pixel(50, 10, RED), _pixel(50, 190, BLUE)),
        ),
        id="exif-orientation-6",
    ),
    pytest.param(
        Case(
            "rotated.png",
            lambda: _encode(_halves(200, 100), "PNG", exif=_orientation_exif(6)),
            source_format="PNG",
            size=(100, 200),
            transformations=("exif_transpose", "converted:PNG"),
            check=_all(_pixel(50, 10, RED), _pixel(50, 190, BLUE)),
        ),
        id="png-exif-orientation-6",
    ),
    pytest.param(
        Case(
            "scan.tif",
            # Pillow turns TIFFs upright while decoding: preflight must not turn them twice
            lambda: _encode(_halves(200, 100), "TIFF", tiffinfo={0x0112: 6}),
            source_format="TIFF",
            size=(100, 200),
            transformations=("exif_transpose", "converted:TIFF"),
            check=_all(_pixel(50, 10, RED), _pixel(50, 190, BLUE)),
        ),
        id="tiff-orientation-6",
    ),
    pytest.param(
        Case(
            "iphone.heic",
            _heic,
            source_format="HEIF",
            size=(160, 120),
            transformations=("converted:HEIF",),
            check=_pixel(10, 10, RED),
        ),
        id="heic",
        marks=pytest.mark.skipif(not _heif_writable(), reason="this pillow-heif has no HEVC encoder"),
    ),
    pytest.param(
        Case(
            "portrait.heic",
            # libheif turns it upright while decoding: preflight must not turn it twice
            lambda: _heic(200, 100, orientation=6),
            source_format="HEIF",
            size=(100, 200),
            transformations=("exif_transpose", "converted:HEIF"),
            check=_all(_pixel(50, 10, RED), _pixel(50, 190, BLUE)),
        ),
        id="heic-orientation-6",
        marks=pytest.mark.skipif(not _heif_writable(), reason="this pillow-heif has no HEVC encoder"),
    ),
    pytest.param(
        Case(
            "logo.png",
            _rgba_png,
            source_format="PNG",
            as_is=True,
            size=(120, 100),
            check=_pixel(100, 50, BLUE),
        ),
        id="png-with-alpha",
    ),
]


class _FakeS3:
    """Serves one object's bytes and remembers every GetObject request."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[dict[str, Any]] = []

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {"Body": io.BytesIO(self.data)}


def _object(key: str, size: int) -> ObjectInfo:
    return ObjectInfo(
        bucket="photos",
        key=key,
        size=size,
        etag="0123abcd",
        last_modified=datetime(2024, 5, 1, tzinfo=UTC),
        content_type="image/jpeg",
    )


@pytest.fixture
def fresh_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow as a new worker process sees it: no HEIF opener yet, preflight not initialised."""
    from imagelabels.preflight import checks as preflight

    monkeypatch.setattr(preflight, "_pillow_ready", False)
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)


@pytest.mark.usefixtures("fresh_pillow")
@pytest.mark.parametrize("case", CASES)
def test_preflight(case: Case) -> None:
    data = case.data()
    s3 = _FakeS3(data)
    obj = _object(case.key, len(data) if case.listed_size is None else case.listed_size)

    if case.reason is not None:
        with pytest.raises(LabelingError) as caught:
            fetch_and_prepare(s3, obj)
        error = caught.value
        assert (error.reason, error.stage, error.retryable) == (case.reason, "preflight", False)
        assert case.message in error.message
        assert len(s3.requests) == int(case.read)
        return

    prepared = fetch_and_prepare(s3, obj, keep_pixels=True)
    sent = Image.open(io.BytesIO(prepared.data))
    sent.load()
    assert prepared.source_format == case.source_format
    assert prepared.send_s3_reference is case.as_is
    assert sent.format == prepared.data_format
    assert sent.size == case.size
    assert (prepared.obj.width, prepared.obj.height) == (case.original or case.size)
    assert prepared.obj.key == obj.key
    if case.as_is:
        assert (prepared.data, prepared.data_format, prepared.transformations) == (
            data,
            case.source_format,
            (),
        )
    else:
        assert prepared.data_format == "JPEG"
        assert len(prepared.data) <= MAX_INLINE_BYTES
        assert set(case.transformations) <= set(prepared.transformations), prepared.transformations
    assert prepared.pixels.mode == "RGB"
    assert prepared.size == sent.size
    assert prepared.pixels.size == _fitted(sent.size, PIXELS_MAX_SIDE)  # the local model needs no more
    if case.check is not None:
        case.check(sent)
        case.check(prepared.pixels.resize(sent.size, Image.Resampling.NEAREST))
    assert s3.requests == [{"Bucket": "photos", "Key": case.key, "IfMatch": '"0123abcd"'}]

    lean = fetch_and_prepare(_FakeS3(data), obj)
    assert lean.pixels is None
    assert lean.data == prepared.data
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_jpeg_too_big_for_5mb_is_recompressed_then_downscaled_until_it_fits() -> None:
    """4000x4000 noise: 13.7 MB at quality 90, still over 5 MB at 60, so it must also shrink.

    The EXIF orientation forces the conversion (the original alone would go as an S3 reference).
    """
    data = _jpeg_with_orientation(_noise(4000, 4000, seed=1), 6, quality=90)
    assert MAX_INLINE_BYTES < len(data) <= MAX_S3_OBJECT_BYTES

    prepared = fetch_and_prepare(_FakeS3(data), _object("noise.jpg", len(data)))

    sent = Image.open(io.BytesIO(prepared.data))
    assert sent.format == "JPEG"
    assert len(prepared.data) <= MAX_INLINE_BYTES
    assert prepared.send_s3_reference is False
    assert sent.size[0] == sent.size[1] < 4000
    assert (prepared.obj.width, prepared.obj.height) == (4000, 4000)
    assert "jpeg_quality:60" in prepared.transformations
    assert f"resized:4000x4000->{sent.size[0]}x{sent.size[1]}" in prepared.transformations


def test_a_body_cut_short_is_a_retryable_read_error_not_a_corrupt_image() -> None:
    from botocore.response import StreamingBody

    data = _encode(_noise(200, 150), "JPEG")

    class CutShort(_FakeS3):
        def get_object(self, **request: Any) -> dict[str, Any]:
            return {"Body": StreamingBody(io.BytesIO(data[:1000]), len(data))}

    with pytest.raises(LabelingError) as caught:
        fetch_and_prepare(CutShort(data), _object("cut.jpg", len(data)))

    assert (caught.value.reason, caught.value.stage, caught.value.retryable) == ("s3_get_error", "read", True)


def test_an_object_that_grew_past_15mb_since_its_head_is_rejected_after_reading_15mb() -> None:
    s3 = _FakeS3(bytes(MAX_S3_OBJECT_BYTES + 10))

    with pytest.raises(LabelingError) as caught:
        fetch_and_prepare(s3, _object("grown.png", 1000))

    assert caught.value.reason == "object_too_large"


# --- decoding memory: caps, the header-based estimate, the budget -------------------------------


def _png_header(width: int, height: int, colour_type: int = 6) -> bytes:
    """A PNG header (8-bit, ``colour_type`` 6: RGBA) with a few bytes of data: enough for
    everything preflight decides before decoding; decoding it would fail as truncated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with its frame header rewritten to claim ``width`` x ``height``."""
    start = min(i for i in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if i >= 0)
    return data[: start + 5] + struct.pack(">HH", height, width) + data[start + 9 :]


class _RecordingBudget(DecodeBudget):
    """A small budget that remembers every reservation asked for and what was held at once."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.asked: list[int] = []
        self.holders = 0
        self.most_holders = 0
        self._count = threading.Lock()

    @contextmanager
    def reserve(self, nbytes: int, what: str = "an image") -> Iterator[int]:
        self.asked.append(nbytes)
        with super().reserve(nbytes, what) as held:
            with self._count:
                self.holders += 1
                self.most_holders = max(self.most_holders, self.holders)
            try:
                yield held
            finally:
                with self._count:
                    self.holders -= 1


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], _RecordingBudget]:
    """Replace the process's decode budget with a recording one of the given capacity."""

    def install(capacity: int) -> _RecordingBudget:
        budget = _RecordingBudget(capacity)
        monkeypatch.setattr(decode_budget, "_process_budget", budget)
        return budget

    return install


@pytest.mark.parametrize(
    ("mode", "size"),
    [("1", 1), ("L", 1), ("P", 1), ("I;16", 2), ("LA", 4), ("RGB", 4), ("RGBA", 4), ("CMYK", 4), ("F", 4)],
)
def test_pillow_stores_rgb_in_four_bytes_a_pixel(mode: str, size: int) -> None:
    assert pillow_bytes_per_pixel(mode) == size


def test_the_decode_cost_comes_from_the_header_without_decoding_a_pixel() -> None:
    """4000 x 3000 RGBA PNG whose pixel data is missing: decoding would fail, estimating must not.

    A PNG may carry its EXIF orientation after the pixels, so it is costed as converted: the
    decoded RGBA (4 bytes/px) plus its decoder (1), then its RGB working copy (4) next to it and
    a strip of temporaries, then the working copy, the fitted copy (4) and the JPEG (2).
    """
    px = 4000 * 3000

    fixed = FIXED_DECODE_BYTES  # libjpeg's pools, zlib's window... whatever the size

    assert decode_cost(_png_header(4000, 3000)) == fixed + max(5 * px, 8 * px + STRIP_BYTES, 10 * px)
    assert estimate_cost(Header("PNG", "RGBA", (4000, 3000), as_is=True), keep_pixels=False) == fixed + 5 * px


def test_a_progressive_jpeg_is_costed_with_its_coefficients_and_never_drafted() -> None:
    """800 x 600, 4:2:0: libjpeg keeps every DCT coefficient of a multi-scan JPEG (2 bytes each,
    per 8 x 8 block of each component, padded to whole 16 x 16 MCUs) at any scale, so it counts
    as a full decode (capped at 50 MP) and is decoded at full size; a baseline one sent as it is
    is only checked, at 1/2 scale (400 x 300: the smallest libjpeg scale that keeps 256 px on the
    long side for the perceptual hash, ``HASH_SOURCE_SIDE``)."""
    image = _noise(800, 600)
    baseline = _encode(image, "JPEG", quality=85)
    progressive = _encode(image, "JPEG", quality=85, progressive=True)
    coefficients = (100 * 76 + 2 * 50 * 38) * 64 * 2
    rows = JPEG_ROW_BYTES_PER_COLUMN * 800

    assert decode_cost(baseline) == FIXED_DECODE_BYTES + 400 * 300 * 5 + rows
    assert decode_cost(progressive) == FIXED_DECODE_BYTES + 800 * 600 * 5 + coefficients + rows


def test_the_red_team_png_is_rejected_from_its_header_and_reserves_nothing(
    small_budget: Callable[[int], _RecordingBudget],
) -> None:
    """15,800 x 15,800 RGBA (250 MP, under the header cap): 1 GB to decode, 4 GB to convert."""
    budget = small_budget(100 * 2**20)
    data = _png_header(15_800, 15_800)

    with pytest.raises(LabelingError) as caught:
        fetch_and_prepare(_FakeS3(data), _object("bomb.png", len(data)))

    assert (caught.value.reason, caught.value.stage, caught.value.retryable) == (
        "too_many_pixels",
        "preflight",
        False,
    )
    assert "15800x15800 px (250 MP): PNG cannot be decoded reduced" in caught.value.message
    assert f"at most {MAX_DECODED_PIXELS // 1_000_000} MP in full" in caught.value.message
    assert budget.asked == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(lambda: _png_header(7_100, 7_100), "PNG cannot be decoded reduced", id="png-50.4mp"),
        pytest.param(
            lambda: _png_header(7_100, 7_100, colour_type=0), "PNG cannot be decoded reduced", id="grey-png"
        ),
        pytest.param(
            lambda: _jpeg_claiming(_encode(_noise(160, 120), "JPEG", progressive=True), 9_000, 6_000),
            "progressive (multi-scan) JPEG",
            id="progressive-jpeg-54mp",
        ),
    ],
)
def test_over_the_full_decode_cap_what_cannot_be_decoded_reduced_is_rejected(
    data: Callable[[], bytes], message: str
) -> None:
    body = data()

    with pytest.raises(LabelingError) as caught:
        decode_cost(body)
    with pytest.raises(LabelingError) as prepared:
        prepare(_object("big", len(body)), body)

    assert caught.value.reason == prepared.value.reason == "too_many_pixels"
    assert message in caught.value.message
    assert "50 MP" in prepared.value.message


def test_a_baseline_jpeg_over_the_full_decode_cap_is_decoded_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    """9,000 x 6,000 (54 MP) shown rotated: full size would fit Rekognition, but 54 MP is over the
    cap, so libjpeg decodes it at 1/2 (4,500 x 3,000) and that is what is sent."""
    decoded: list[tuple[int, int]] = []
    real_decode = preflight._decode

    def spy(image: Image.Image, source_format: str) -> tuple[int, bool]:
        result = real_decode(image, source_format)
        decoded.append(image.size)
        return result

    monkeypatch.setattr(preflight, "_decode", spy)
    data = _jpeg_with_orientation(Image.new("L", (9_000, 6_000), 90), 6)

    prepared = fetch_and_prepare(_FakeS3(data), _object("tall.jpg", len(data)), keep_pixels=True)

    assert decoded == [(4_500, 3_000)]
    assert Image.open(io.BytesIO(prepared.data)).size == (3_000, 4_500)
    assert (prepared.obj.width, prepared.obj.height) == (6_000, 9_000)
    assert "resized:6000x9000->3000x4500" in prepared.transformations
    assert prepared.pixels.size == (1_365, 2_048)


def test_a_jpeg_sent_as_it_is_is_decoded_only_as_large_as_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rekognition reads the original from S3, so preflight only checks that it decodes: at 1/8
    scale (every byte is still decoded). The local model gets its pixels from a 1/2 decode."""
    decoded: list[tuple[int, int]] = []
    real_decode = preflight._decode

    def spy(image: Image.Image, source_format: str) -> tuple[int, bool]:
        result = real_decode(image, source_format)
        decoded.append(image.size)
        return result

    monkeypatch.setattr(preflight, "_decode", spy)
    data = _encode(_halves(4_096, 3_072), "JPEG")

    lean = fetch_and_prepare(_FakeS3(data), _object("photo.jpg", len(data)))
    kept = fetch_and_prepare(_FakeS3(data), _object("photo.jpg", len(data)), keep_pixels=True)

    assert decoded == [(512, 384), (2_048, 1_536)]
    assert lean.send_s3_reference
    assert kept.send_s3_reference
    assert lean.data == kept.data == data
    assert (lean.obj.width, lean.obj.height) == (kept.obj.width, kept.obj.height) == (4_096, 3_072)
    assert kept.pixels.size == (2_048, 1_536)
    _pixel(10, 10, RED)(kept.pixels)
    _pixel(2_040, 10, BLUE)(kept.pixels)
    with pytest.raises(LabelingError) as caught:  # still every byte decoded: a cut file is caught
        prepare(_object("cut.jpg", len(data) // 2), _truncated(data))
    assert caught.value.reason == "corrupt_image"


_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF", "AVIF", "JPEG2000"]
_MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@pytest.mark.parametrize("source_format", _FORMATS)
def test_the_default_budget_holds_the_dearest_image_preflight_admits(source_format: str) -> None:
    """Every admissible decode fits the default budget alone, whatever its format, mode and shape
    (so at the default, running alone never means running over budget)."""
    default = DEFAULT_BUDGET_MB * 2**20
    worst = 0
    for mode in _MODES:
        for size in [(7_071, 7_071), (10_000, 5_000), (9_999, 5_000), (50_000, 1_000), (8_164, 6_124)]:
            assert size[0] * size[1] <= MAX_DECODED_PIXELS
            coefficients = 8 * size[0] * size[1] if source_format == "JPEG" else 0  # CMYK 4:4:4:4
            header = Header(source_format, mode, size, coefficient_bytes=coefficients, row_bytes=64 * 65_535)
            for keep_pixels in (False, True):
                worst = max(worst, estimate_cost(header, keep_pixels=keep_pixels))
    assert worst <= default, f"{source_format}: {worst / 2**20:.0f} MB"


def test_concurrent_decodes_reserve_their_estimate_and_never_more_than_the_budget(
    small_budget: Callable[[int], _RecordingBudget],
) -> None:
    """A batch of big RGBA PNGs on 8 threads, made small: each costs ~40 % of the budget, so at
    most two decode at once, and every one of them is prepared."""
    images = [_encode(Image.new("RGBA", (600, 400), (i, 0, 255 - i, 128)), "PNG") for i in range(12)]
    cost = decode_cost(images[0])
    budget = small_budget(int(cost * 2.5))

    with ThreadPoolExecutor(8) as pool:
        prepared = list(pool.map(lambda d: prepare(_object("a.png", len(d)), d), images))

    assert len(prepared) == 12
    assert all(p.transformations == () for p in prepared)  # RGBA PNG: sent as it is
    assert budget.asked == [decode_cost(d) for d in images]
    assert budget.peak_reserved <= budget.capacity
    assert budget.most_holders <= 2
    assert budget.reserved == 0


def test_a_decode_larger_than_the_whole_budget_runs_alone_rather_than_failing(
    small_budget: Callable[[int], _RecordingBudget],
) -> None:
    budget = small_budget(2**20)  # 1 MB: less than any of these needs
    images = [_encode(_noise(600, 400, seed=i), "PNG") for i in range(4)]

    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(lambda d: prepare(_object("a.png", len(d)), d, keep_pixels=True), images))

    assert [p.pixels.size for p in prepared] == [(600, 400)] * 4
    assert all(asked > budget.capacity for asked in budget.asked)
    assert budget.most_holders == 1
    assert budget.peak_reserved == budget.capacity


def test_in_a_batch_of_bombs_and_photos_every_image_is_prepared_or_rejected_with_its_reason(
    small_budget: Callable[[int], _RecordingBudget],
) -> None:
    small_budget(64 * 2**20)
    bodies = {f"bomb-{i}.png": _png_header(15_800, 15_800) for i in range(6)}
    bodies |= {f"photo-{i}.jpg": _encode(_noise(640, 480, seed=i), "JPEG") for i in range(10)}
    bodies["wide.png"] = _encode(_halves(10_001, 100), "PNG")

    def one(item: tuple[str, bytes]) -> tuple[str, str]:
        key, data = item
        try:
            fetch_and_prepare(_FakeS3(data), _object(key, len(data)), keep_pixels=True)
            return key, "prepared"
        except LabelingError as error:
            return key, error.reason

    with ThreadPoolExecutor(16) as pool:
        outcomes = dict(pool.map(one, bodies.items()))

    assert sorted(outcomes) == sorted(bodies)
    assert {k: v for k, v in outcomes.items() if v != "prepared"} == {
        k: "too_many_pixels" for k in bodies if "bomb" in k
    }


def test_glibc_returns_freed_image_buffers_unless_the_operator_chose_a_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert preflight._return_freed_images_to_the_os() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert preflight._return_freed_images_to_the_os() is (platform.libc_ver()[0] == "glibc")
