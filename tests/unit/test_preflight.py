"""Preflight over generated bad and odd files: each is rejected with its reason or fixed.

Every case goes through :func:`fetch_and_prepare` with a fake S3 client that serves the bytes,
so the table also proves which rejections need no GET at all.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from imagelabels.documents import ObjectInfo
from imagelabels.labelers.base import LabelingError
from imagelabels.preflight import fetch_and_prepare
from imagelabels.prepared import MAX_INLINE_BYTES, MAX_S3_OBJECT_BYTES

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
    from imagelabels import preflight

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
    assert prepared.pixels.size == sent.size == prepared.size
    if case.check is not None:
        case.check(sent)
        case.check(prepared.pixels)
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
