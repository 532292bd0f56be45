"""Preflight: every object is checked, and fixed where it can be, before any paid API call.

Rekognition accepts JPEG and PNG only, 80 to 10,000 px per side, at most 15 MB as an S3 object and
5 MB as raw bytes. Anything else costs a failed (and billed) call or, worse, a wrong answer (a
sideways photo is labeled sideways). So every object goes through :func:`prepare` first, which
returns a :class:`~imagelabels.prepared.PreparedImage` or raises
:class:`~imagelabels.labelers.base.LabelingError` with ``retryable=False, stage="preflight"`` and
one of these stable reasons:

``empty_object``        0 bytes.
``object_too_large``    over :data:`~imagelabels.prepared.MAX_S3_OBJECT_BYTES` (15 MB).
``not_an_image``        the magic bytes match no image format (text, PDF, zip, video...).
``unsupported_format``  a recognised image format this Pillow cannot decode (JPEG XL), or a
                        decoded pixel mode it cannot turn into RGB.
``corrupt_image``       the header or the pixel data does not decode, truncation included: the
                        image is fully decoded, and ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.
``image_too_small``     a side under 80 px, or a strip so thin (over 125:1) that fitting its long
                        side into 10,000 px would leave the short one under 80 px.
``too_many_pixels``     over :data:`MAX_PIXELS` (a decompression-bomb guard, checked on the header
                        before any pixel is decoded).

The format is detected from the magic bytes; the key's extension and the Content-Type are
ignored (a disagreement is only logged at debug level), because uploaders get them wrong.

Decision: the object is sent untouched, as an ``S3Object`` reference (``send_s3_reference=True``,
``data`` = the original bytes), when it is JPEG or PNG, within the size limits, 8-bit ``RGB``,
``L``, ``RGBA`` or ``P`` (not CMYK, not 16-bit) and has no EXIF orientation other than 1. That is
the common case and costs the workers no upload. Anything else is converted to a JPEG of at most
5 MB sent as bytes: first frame only (GIF, animated WebP, multi-page TIFF), EXIF orientation
applied, alpha flattened on white, CMYK to RGB, 16-bit scaled to 8-bit, longest side down to
10,000 px, quality 90, lowered and then downscaled until the bytes fit. ``transformations`` lists
what was done, e.g. ``("exif_transpose", "cmyk_to_rgb", "resized:12000x900->10000x750",
"converted:WEBP")``.

Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default) is raised
to :data:`MAX_PIXELS` once, process-wide, so that this module's check decides, with its reason;
it is never lowered.
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
import threading
from contextlib import closing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from imagelabels.documents import ObjectInfo
from imagelabels.labelers.base import LabelingError
from imagelabels.prepared import (
    MAX_DIMENSION,
    MAX_INLINE_BYTES,
    MAX_S3_OBJECT_BYTES,
    MIN_DIMENSION,
    PreparedImage,
)

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

MAX_PIXELS = 250_000_000  # ~750 MB decoded as RGB; JPEGs over 10,000 px are decoded downscaled
JPEG_QUALITY = 90
FALLBACK_QUALITIES = (80, 70, 60)  # tried before downscaling when the JPEG is over 5 MB
ORIENTATION_TAG = 0x0112
READ_CHUNK_BYTES = 1024 * 1024
SENT_AS_IS_MODES = frozenset({"RGB", "L", "RGBA", "P"})
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})

# What the uploader probably meant, per format: only for the debug log on a disagreement.
_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "WEBP": {".webp"},
    "BMP": {".bmp", ".dib"},
    "TIFF": {".tif", ".tiff"},
    "HEIF": {".heic", ".heif", ".hif"},
    "AVIF": {".avif"},
    "JPEG2000": {".jp2", ".j2k", ".jpf", ".jpx"},
    "JXL": {".jxl"},
}
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"heif"})
_GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

_pillow_ready = False
_pillow_lock = threading.Lock()


def _reject(reason: str, message: str) -> LabelingError:
    """A preflight rejection: the image itself is bad, so retrying cannot help."""
    return LabelingError(reason, message, retryable=False, stage="preflight")


def _init_pillow() -> None:
    """Register the HEIF opener and raise Pillow's bomb limit, once per process.

    Lazy because DAG files import this module and must not pay for Pillow; locked because
    batches prepare images on several threads.
    """
    global _pillow_ready
    if _pillow_ready:
        return
    with _pillow_lock:
        if _pillow_ready:
            return
        import pillow_heif
        from PIL import Image

        pillow_heif.register_heif_opener()
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        _pillow_ready = True


def _iso_bmff_format(data: bytes) -> str | None:
    """HEIF or AVIF from an ISO-BMFF ``ftyp`` box (the major brand first, then compatible ones).

    Generic brands (``mif1``...) say "some HEIF image"; video brands (``isom``, ``qt``) mean no
    image at all.
    """
    box_size = int.from_bytes(data[0:4], "big")
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, min(box_size, len(data), 256) - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS:
        return "HEIF"
    if compatible & _AVIF_BRANDS:
        return "AVIF"
    if compatible & _HEIF_BRANDS or major in _GENERIC_HEIF_BRANDS or compatible & _GENERIC_HEIF_BRANDS:
        return "HEIF"
    return None


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (Pillow's format names), or ``None``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:2] == b"BM" and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if data.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or data.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    if data.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n") or data.startswith(b"\xff\x0a"):
        return "JXL"
    if data[4:8] == b"ftyp" and len(data) >= 12:
        return _iso_bmff_format(data)
    return None


def _log_disagreement(obj: ObjectInfo, source_format: str) -> None:
    """Debug-log a Content-Type or extension that names another format (magic bytes win)."""
    extension = posixpath.splitext(obj.key)[1].lower()
    expected = _EXTENSIONS.get(source_format, set())
    subtype = (obj.content_type or "").split(";")[0].strip().lower().removeprefix("image/")
    type_ok = not obj.content_type or subtype in {e.lstrip(".") for e in expected} | {source_format.lower()}
    if (extension and extension not in expected) or not type_ok:
        log.debug(
            "s3://%s/%s is %s by its magic bytes (extension %r, Content-Type %r)",
            obj.bucket,
            obj.key,
            source_format,
            extension,
            obj.content_type,
        )


def _check_size(size: int) -> None:
    """The byte-size limits, before anything is parsed (or, from the listing, read)."""
    if size == 0:
        raise _reject("empty_object", "the object is 0 bytes")
    if size > MAX_S3_OBJECT_BYTES:
        raise _reject(
            "object_too_large",
            f"{size / 2**20:.1f} MiB, Rekognition reads at most {MAX_S3_OBJECT_BYTES // 2**20} MiB from S3",
        )


def _detect(data: bytes) -> str:
    """The format by magic bytes, or the rejection saying why there is none we can decode."""
    from PIL import Image

    source_format = sniff_format(data)
    if source_format is None:
        raise _reject("not_an_image", f"the first bytes {data[:8]!r} match no image format")
    Image.init()
    if source_format not in Image.OPEN:
        raise _reject("unsupported_format", f"{source_format} is an image format this Pillow cannot decode")
    return source_format


def _open(data: bytes, source_format: str) -> Image:
    """Open (header only) with the detected format's plugin, so Pillow cannot second-guess it."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data), formats=[source_format])
    except Image.DecompressionBombError as error:
        raise _reject("too_many_pixels", str(error)) from error
    except UnidentifiedImageError as error:
        raise _reject("corrupt_image", f"{source_format} header does not parse") from error
    except MemoryError:
        raise
    except Exception as error:  # a decoder's error on a hostile file is a property of the file
        raise _reject("corrupt_image", f"{source_format} header does not parse: {error}") from error


def _fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` scaled so its longest side is at most ``longest``, aspect kept."""
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_dimensions(size: tuple[int, int]) -> None:
    """Pixel count and side limits from the header, before any pixel is decoded.

    Both are orientation-independent, so the stored size is enough.
    """
    width, height = size
    if width * height > MAX_PIXELS:
        raise _reject(
            "too_many_pixels",
            f"{width}x{height} px ({width * height / 1e6:.0f} MP), preflight decodes at most {MAX_PIXELS / 1e6:.0f} MP",
        )
    if min(width, height) < MIN_DIMENSION:
        raise _reject(
            "image_too_small", f"{width}x{height} px, Rekognition needs at least {MIN_DIMENSION} px per side"
        )
    fitted = _fitted(size, MAX_DIMENSION)
    if min(fitted) < MIN_DIMENSION:
        raise _reject(
            "image_too_small",
            f"{width}x{height} px would be {fitted[0]}x{fitted[1]} px once fitted into {MAX_DIMENSION} px; "
            f"Rekognition needs at least {MIN_DIMENSION} px per side",
        )


def _declared_orientation(image: Image) -> int:
    """The EXIF (or XMP) orientation as stored.

    pillow-heif applies it while decoding and keeps the original in ``info``.
    """
    original = image.info.get("original_orientation")
    if isinstance(original, int):
        return original
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def _high_bit_depth(image: Image, source_format: str, data: bytes) -> bool:
    """More than 8 bits per sample in the file (Pillow reads some 16-bit files as 8-bit RGB)."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return True
    if source_format == "PNG" and data[12:16] == b"IHDR":
        return data[24] > 8
    if source_format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258, (8,))
        return int(max(bits if isinstance(bits, tuple) else (bits,))) > 8
    return False


def _is_multi_frame(image: Image) -> bool:
    """GIF, animated WebP or multi-page TIFF: only the first frame is labeled."""
    return bool(getattr(image, "is_animated", False)) or int(getattr(image, "n_frames", 1)) > 1


def _decode(image: Image, source_format: str) -> tuple[int, bool]:
    """Decode every pixel (the only way to catch truncation).

    Returns the declared orientation, read first because TIFF applies and drops it while
    decoding (and PNG decodes to find it), and whether the file has more than one frame.
    """
    from PIL.Image import DecompressionBombError

    try:
        orientation = _declared_orientation(image)
        image.load()
        multi_frame = _is_multi_frame(image)  # may peek at frame 2 and come back
        image.load()  # again when the peek dropped the first frame's pixels
    except DecompressionBombError as error:  # a later frame's header
        raise _reject("too_many_pixels", str(error)) from error
    except MemoryError:
        raise
    except Exception as error:  # truncated or corrupt data, whatever the decoder raises
        raise _reject("corrupt_image", f"{source_format} does not decode: {error}") from error
    return orientation, multi_frame


@dataclass(frozen=True)
class _Inspected:
    """What the decision needs to know about the decoded original."""

    source_format: str
    stored_size: tuple[int, int]  # from the header: the decoded image may be a JPEG draft
    orientation: int
    high_bit_depth: bool
    multi_frame: bool

    def sendable_as_is(self, image: Image) -> bool:
        """JPEG/PNG Rekognition reads from S3 exactly as a viewer shows it (module docstring)."""
        return (
            self.source_format in ("JPEG", "PNG")
            and max(self.stored_size) <= MAX_DIMENSION
            and image.mode in SENT_AS_IS_MODES
            and not self.high_bit_depth
            and self.orientation == 1
        )


def _to_8bit(image: Image) -> Image:
    """16-bit (or 32-bit int, or float) grey to 8-bit ``L``, scaled rather than clipped to white."""
    wide = image.convert("F") if image.mode == "F" else image.convert("I")
    low, high = cast(tuple[float, float], wide.getextrema())  # one band
    if wide.mode == "I" and low >= 0 and high <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        span = float(high) - float(low) or 1.0
        scale, offset = 255 / span, -float(low) * 255 / span
    return wide.point(lambda value: value * scale + offset).convert("L")


def _to_rgb(image: Image, transformations: list[str]) -> Image:
    """8-bit RGB: CMYK converted, high bit depths scaled, transparency flattened on white."""
    from PIL import Image as PILImage

    if image.mode == "CMYK":
        transformations.append("cmyk_to_rgb")
        return image.convert("RGB")
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = _to_8bit(image)
    if image.mode in ALPHA_MODES or image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        transformations.append("flattened_alpha")
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


def _encode_jpeg(image: Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _encode_within_limit(image: Image) -> tuple[Image, bytes, int]:
    """JPEG bytes of at most :data:`MAX_INLINE_BYTES`: lower the quality, then downscale.

    Returns the image actually encoded (maybe smaller), its bytes and the quality used.
    """
    from PIL import Image as PILImage

    for quality in (JPEG_QUALITY, *FALLBACK_QUALITIES):
        data = _encode_jpeg(image, quality)
        if len(data) <= MAX_INLINE_BYTES:
            return image, data, quality
    quality = FALLBACK_QUALITIES[-1]
    while min(image.size) > MIN_DIMENSION:
        # bytes grow with pixels: aim a little under the limit to converge in one or two rounds
        factor = min(0.9, math.sqrt(MAX_INLINE_BYTES / len(data)) * 0.95)
        width, height = image.size
        smaller = (max(MIN_DIMENSION, round(width * factor)), max(MIN_DIMENSION, round(height * factor)))
        image = image.resize(smaller, PILImage.Resampling.LANCZOS)
        data = _encode_jpeg(image, quality)
        if len(data) <= MAX_INLINE_BYTES:
            return image, data, quality
    raise _reject("too_many_pixels", f"no JPEG of {image.size[0]}x{image.size[1]} px fits in 5 MB")


def _convert(
    image: Image, info: _Inspected, original: tuple[int, int]
) -> tuple[Image, bytes, tuple[str, ...]]:
    """The decoded, oriented image as a JPEG that Rekognition accepts as bytes."""
    from PIL import Image as PILImage

    transformations: list[str] = []
    if info.multi_frame:
        transformations.append("first_frame")
    if info.orientation != 1:
        transformations.append("exif_transpose")
    if info.high_bit_depth:
        transformations.append("16bit_to_8bit")
    rgb = _to_rgb(image, transformations)
    target = _fitted(rgb.size, MAX_DIMENSION)
    if target != rgb.size:
        rgb = rgb.resize(target, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    final, data, quality = _encode_within_limit(rgb)
    if final.size != original:
        transformations.append(f"resized:{original[0]}x{original[1]}->{final.size[0]}x{final.size[1]}")
    if info.source_format != "JPEG":
        transformations.append(f"converted:{info.source_format}")
    if quality != JPEG_QUALITY:
        transformations.append(f"jpeg_quality:{quality}")
    return final, data, tuple(transformations)


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``size`` as displayed: orientations 5 to 8 swap width and height."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _draft_for_resize(image: Image, source_format: str) -> bool:
    """Let libjpeg decode a JPEG too big for Rekognition at 1/2, 1/4 or 1/8 scale (memory).

    Every byte is still decoded, so truncation is still caught.
    """
    if source_format != "JPEG" or max(image.size) <= MAX_DIMENSION:
        return False
    image.draft(None, _fitted(image.size, MAX_DIMENSION))
    return True


def prepare(obj: ObjectInfo, data: bytes, *, keep_pixels: bool = False) -> PreparedImage:
    """Check ``data`` (the bytes of ``obj``) and return what a labeler may be given.

    Pure: no I/O. ``obj.width``/``obj.height`` in the result are the decoded, oriented size of
    the original.

    :param keep_pixels: also return the decoded RGB image (for the local model); off by default
        to save memory when Rekognition only needs the bytes or the S3 reference.
    :raises LabelingError: ``stage="preflight"``, ``retryable=False``, reason as listed in the
        module docstring.
    """
    _check_size(len(data))
    _init_pillow()  # before _detect: HEIF is decodable only once its opener is registered
    source_format = _detect(data)
    _log_disagreement(obj, source_format)
    with _open(data, source_format) as image:
        _check_dimensions(image.size)
        stored_size = image.size
        high_bit_depth = _high_bit_depth(image, source_format, data)
        drafted = _draft_for_resize(image, source_format)
        orientation, multi_frame = _decode(image, source_format)
        info = _Inspected(source_format, stored_size, orientation, high_bit_depth, multi_frame)
        try:
            if info.sendable_as_is(image):
                return _as_is(obj, data, image, info, keep_pixels=keep_pixels)
            original = _oriented(stored_size, orientation) if drafted else None
            return _converted(obj, image, info, original, keep_pixels=keep_pixels)
        except (LabelingError, MemoryError):
            raise
        except Exception as error:  # a mode Pillow decodes but cannot turn into RGB
            raise _reject(
                "unsupported_format", f"{source_format} in mode {image.mode} cannot be converted: {error}"
            ) from error


def _as_is(
    obj: ObjectInfo, data: bytes, image: Image, info: _Inspected, *, keep_pixels: bool
) -> PreparedImage:
    """The original bytes, for Rekognition to read from S3 itself."""
    return PreparedImage(
        obj=replace(obj, width=image.size[0], height=image.size[1]),
        data=data,
        data_format="PNG" if info.source_format == "PNG" else "JPEG",
        source_format=info.source_format,
        send_s3_reference=True,
        pixels=_to_rgb(image, []) if keep_pixels else None,
    )


def _converted(
    obj: ObjectInfo, image: Image, info: _Inspected, original: tuple[int, int] | None, *, keep_pixels: bool
) -> PreparedImage:
    """A JPEG of the oriented image, sent as bytes.

    :param original: the oriented size of the original when the decoder already scaled it
        (JPEG draft); ``None`` to take it from the decoded image.
    """
    from PIL import ImageOps

    oriented = ImageOps.exif_transpose(image)
    original = original or oriented.size
    final, jpeg, transformations = _convert(oriented, info, original)
    return PreparedImage(
        obj=replace(obj, width=original[0], height=original[1]),
        data=jpeg,
        data_format="JPEG",
        source_format=info.source_format,
        send_s3_reference=False,
        transformations=transformations,
        pixels=final if keep_pixels else None,
    )


def _read_error(obj: ObjectInfo, error: Exception) -> LabelingError:
    """Map an S3 error: a missing object or version is final; anything else may pass."""
    from botocore.exceptions import ClientError

    where = f"s3://{obj.bucket}/{obj.key}" + (f"?versionId={obj.version_id}" if obj.version_id else "")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
            return LabelingError("object_gone", f"{where} was deleted", retryable=False, stage="read")
        if code in {"412", "PreconditionFailed"}:
            return LabelingError(
                "object_changed",
                f"{where} was overwritten after it was described (ETag {obj.etag} no longer matches)",
                retryable=False,
                stage="read",
            )
        return LabelingError(f"s3_get_{code or 'error'}", f"{where}: {error}", retryable=True, stage="read")
    return LabelingError("s3_get_error", f"{where}: {error}", retryable=True, stage="read")


def _get_object_request(obj: ObjectInfo) -> dict[str, Any]:
    """GetObject arguments pinned to the described bytes: the version id, else the ETag.

    On an unversioned bucket the document id comes from the ETag, so labels of bytes uploaded
    after the HEAD must not be stored under it (``IfMatch`` makes S3 refuse with 412).
    """
    request: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
    if obj.version_id and obj.version_id != "null":
        request["VersionId"] = obj.version_id
    elif obj.etag:
        request["IfMatch"] = '"' + obj.etag.strip('"') + '"'
    return request


def fetch_and_prepare(s3_client: Any, obj: ObjectInfo, *, keep_pixels: bool = False) -> PreparedImage:
    """Read ``obj`` from S3 and :func:`prepare` it; empty or oversized objects are never read.

    :raises LabelingError: ``stage="read"``: ``object_gone`` (deleted, not retryable),
        ``object_changed`` (overwritten since the HEAD, not retryable), ``s3_get_<Code>`` or
        ``s3_get_error`` (retryable); ``stage="preflight"``: see :func:`prepare`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    _check_size(obj.size)
    try:
        response = s3_client.get_object(**_get_object_request(obj))
        with closing(response["Body"]) as body:
            data = _read_at_most(body, MAX_S3_OBJECT_BYTES + 1)
    except (ClientError, BotoCoreError) as error:
        raise _read_error(obj, error) from error
    return prepare(obj, data, keep_pixels=keep_pixels)


def _read_at_most(body: Any, limit: int) -> bytes:
    """The body, but never more than ``limit`` bytes (one over the maximum is enough to reject
    an object that grew since the HEAD).

    Read to the end in chunks, so botocore checks the Content-Length there: a connection cut
    short raises a retryable read error instead of looking like a truncated (corrupt) image.
    """
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = body.read(min(READ_CHUNK_BYTES, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
