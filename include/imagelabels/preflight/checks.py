"""Preflight: every object is checked, and fixed where it can be, before any paid API call.

Rekognition accepts JPEG and PNG only, 80 to 10,000 px per side, at most 15 MB as an S3 object and
5 MB as raw bytes. Anything else costs a failed (and billed) call or, worse, a wrong answer (a
sideways photo is labeled sideways). So every object goes through :func:`prepare` first, which
returns a :class:`~imagelabels.preflight.prepared.PreparedImage` or raises
:class:`~imagelabels.errors.LabelingError` with ``retryable=False, stage="preflight"`` and
one of these stable reasons:

``empty_object``        0 bytes.
``object_too_large``    over :data:`~imagelabels.preflight.prepared.MAX_S3_OBJECT_BYTES` (15 MB).
``not_an_image``        the magic bytes match no image format (text, PDF, zip, video...).
``unsupported_format``  a recognised image format this Pillow cannot decode (JPEG XL), or a
                        decoded pixel mode it cannot turn into RGB.
``corrupt_image``       the header or the pixel data does not decode, truncation included: every
                        byte of it is decoded (a JPEG maybe at a reduced scale), and
                        ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.
``image_too_small``     a side under 80 px, or a strip so thin (over 125:1) that fitting its long
                        side into 10,000 px would leave the short one under 80 px.
``too_many_pixels``     over :data:`MAX_PIXELS` in the header, or more than :data:`MAX_DECODED_PIXELS`
                        to decode in full (see *Decoding memory*); checked on the header before any
                        pixel is decoded.

The format is detected from the magic bytes; the key's extension and the Content-Type are
ignored (a disagreement is only logged at debug level), because uploaders get them wrong.

Decision: the object is sent untouched, as an ``S3Object`` reference (``send_s3_reference=True``,
``data`` = the original bytes), when it is JPEG or PNG, within the size limits, 8-bit ``RGB``,
``L``, ``RGBA`` or ``P`` (not CMYK, not 16-bit) and has no EXIF orientation other than 1. That is
the common case and costs the workers no upload. Anything else is converted to a JPEG of at most
5 MB sent as bytes: first frame only (GIF, animated WebP, multi-page TIFF), EXIF orientation
applied, alpha flattened on white, CMYK to RGB, 16-bit scaled to 8-bit, longest side down to
10,000 px (a JPEG over 50 MP: to what libjpeg decoded, see *Decoding memory*), quality 90,
lowered and then downscaled until the bytes fit. ``transformations`` lists
what was done, e.g. ``("exif_transpose", "cmyk_to_rgb", "resized:12000x900->10000x750",
"converted:WEBP")``.

Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default) is raised
to :data:`MAX_PIXELS` once, process-wide, so that this module's check decides, with its reason;
it is never lowered.

Decoding memory
---------------
A 1 MB PNG can hold 250 MP (1 GB as RGBA pixels, 4 GB once converted the old way), and a batch
decodes on 16 threads. So, before any pixel is decoded:

* **Pixel caps.** :data:`MAX_PIXELS` (250 MP) bounds the header; :data:`MAX_DECODED_PIXELS`
  (50 MP) bounds what is decoded *in full*. A single-scan (baseline) JPEG is decoded reduced by
  libjpeg (``draft``: 1/2, 1/4 or 1/8 scale, still reading every byte, so truncation is still
  caught) to what is needed and to at most 50 MP; every other format (PNG, WebP, GIF, TIFF,
  HEIF...) and a progressive or multi-scan JPEG (whose decoder holds every coefficient of the
  full image at any scale) over 50 MP is rejected as ``too_many_pixels``. 50 MP keeps the
  largest non-JPEG photos (48 MP phone HEIC, 8064 x 6048) and 8K screenshots (33 MP); nothing
  needs more: a converted image is sent as a JPEG of at most 5 MB and 10,000 px per side, and
  the local model looks at 224 x 224 (2,000 px at most, for text).
* **Cost estimate.** :func:`decode_cost` tells, from the header (format, mode, size, bit depth,
  JPEG scans and scale, whether the image may be sent as it is), the bytes :func:`prepare` will
  hold at its peak for this image (formula in :func:`estimate_cost`).
* **Budget.** That many bytes are reserved from the process's
  :class:`~imagelabels.preflight.decode_budget.DecodeBudget` (``IMAGELABELS_DECODE_BUDGET_MB``) for the
  decode and conversion, so concurrent decodes never add up to more than the budget.
* **Lean conversion.** Conversion to RGB, flattening and reduction run one strip of rows at a
  time (no full-size temporary besides the result), the decoded image is released as soon as a
  smaller working copy exists, rotation happens on the final, fitted image, and the pixels kept
  for the local model are at most :data:`~imagelabels.preflight.prepared.PIXELS_MAX_SIDE` per side.
* **Freed means freed.** On glibc, image-sized allocations are served by ``mmap`` so a freed
  buffer leaves the resident set at once instead of staying in a thread's malloc arena
  (:func:`_return_freed_images_to_the_os`); otherwise RSS would exceed what the budget admits.

Why this module is long: preflight is one decision per image (sniff, bound, plan the decode from the
header, convert, encode within Rekognition's limits) whose steps share Pillow state and private
helpers; the decode-cost model (``estimate_cost``) sits in the middle because the plan and the cost
guard must read the header the same way. Splitting the cost model out is the next step if this
grows.
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from imagelabels.documents import ObjectInfo
from imagelabels.errors import LabelingError
from imagelabels.fingerprints import phash_pair
from imagelabels.preflight.decode_budget import process_budget
from imagelabels.preflight.prepared import (
    MAX_DIMENSION,
    MAX_INLINE_BYTES,
    MAX_S3_OBJECT_BYTES,
    MIN_DIMENSION,
    PIXELS_MAX_SIDE,
    PreparedImage,
)
from imagelabels.settings import environment

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

MAX_PIXELS = 250_000_000  # in the header; only a baseline JPEG that big can be decoded (reduced)
MAX_DECODED_PIXELS = 50_000_000  # decoded in full: 200 MB as Pillow's RGB (4 bytes a pixel)
JPEG_QUALITY = 90
# The perceptual hash (issue 14 item 5) is computed from a copy at least this large (a JPEG sent
# as it is is decoded at 1/2..1/8 scale down to it, no further): plenty for a 32 x 32 hash.
HASH_SOURCE_SIDE = 256
HASH_SOURCE = (HASH_SOURCE_SIDE, HASH_SOURCE_SIDE)
FALLBACK_QUALITIES = (80, 70, 60)  # tried before downscaling when the JPEG is over 5 MB
ORIENTATION_TAG = 0x0112
READ_CHUNK_BYTES = 1024 * 1024
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1024 * 1024  # a 640 x 480 RGB image is 1.2 MB in Pillow
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


def _return_freed_images_to_the_os() -> bool:
    """On glibc, serve every allocation of :data:`MMAP_THRESHOLD_BYTES` or more (image buffers)
    with ``mmap``, so that freeing one gives it back to the OS at once. Returns whether it did.

    By default glibc raises that threshold after the first large free (up to 32 MB) and then
    keeps freed image buffers in per-thread arenas, where another thread cannot reuse them:
    with 16 threads decoding within a 1 GB budget the worker reached 1.44 GB of RSS, 0.88 GB
    with the threshold fixed (``benchmarks/decode_memory.py``). Process-wide, set once; left
    alone when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator decided) or on another C library.
    """
    import ctypes
    import platform

    if "MALLOC_MMAP_THRESHOLD_" in environment() or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _init_pillow() -> None:
    """Register the HEIF opener, raise Pillow's bomb limit and make glibc return freed image
    buffers (:func:`_return_freed_images_to_the_os`), once per process.

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
        _return_freed_images_to_the_os()
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
    """Header pixel count and side limits, before any pixel is decoded.

    Both are orientation-independent, so the stored size is enough. What may be decoded in full
    (:data:`MAX_DECODED_PIXELS`) is checked by :func:`_plan`, which knows whether the format can
    be decoded reduced.
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

    pillow-heif applies it while decoding and keeps the original in ``info``. Header only for
    JPEG; a PNG may keep its EXIF after the pixels, so for a PNG this decodes.
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


# --- what a decode costs, from the header ---------------------------------------------------------

# What each decoder holds besides Pillow's own buffer while decoding, in bytes per decoded pixel
# (measured with ``benchmarks/decode_memory.py --calibrate`` and rounded up): libwebp's animation
# decoder keeps two RGBA canvases and hands the frame over as a bytes copy; libheif its YCbCr
# planes and an RGB(A) copy (more at 10 bits); OpenJPEG 32 bits per sample and component; a GIF
# frame may be turned into RGBA next to a copy for disposal. Others stream rows into Pillow's
# buffer: 1 byte a pixel is a margin.
DECODER_BYTES_PER_PIXEL = {"WEBP": 12, "HEIF": 8, "AVIF": 8, "JPEG2000": 16, "GIF": 5}
DEFAULT_DECODER_BYTES_PER_PIXEL = 1
# What stays allocated after decoding, as long as the image object lives: libwebp's canvases.
RESIDUE_BYTES_PER_PIXEL = {"WEBP": 8}
JPEG_ROW_BYTES_PER_COLUMN = 64  # libjpeg's MCU-row buffers grow with the stored width, at any scale
STRIP_PIXELS = 1 << 20  # rows converted at once by _rgb_reduced: about 1 MP
STRIP_BYTES = 24 * STRIP_PIXELS  # a strip's crop, conversion, RGBA, flattened copy, alpha and reduction
ENCODED_BYTES_PER_PIXEL = 2  # a JPEG being written (quality 90 noise: ~0.9 byte/px) and its copy
RGB_BYTES_PER_PIXEL = 4  # Pillow stores RGB in 4 bytes a pixel
FIXED_DECODE_BYTES = 2 * 1024 * 1024  # whatever the size: libjpeg's pools, zlib's window, objects


def pillow_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage: 1 for ``1``/``L``/``P``, 2 for 16-bit grey, else
    4 (``RGB`` too: Pillow pads it to 32 bits)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


@dataclass(frozen=True)
class Header:
    """What the estimate needs to know, all of it read before decoding.

    :param decoded_size: the size the decoder will produce (a JPEG's draft scale applied).
    :param coefficient_bytes: a progressive or multi-scan JPEG's coefficient buffer (the whole
        image's DCT coefficients, 2 bytes per sample, at any draft scale); 0 otherwise.
    :param row_bytes: the decoder's row buffers that scale with the stored width (JPEG).
    :param as_is: the image is certainly sent to Rekognition as it is (a JPEG can tell from its
        header; a PNG may keep its EXIF orientation after the pixels, so it counts as converted).
    :param direct_rgb: the decoded image is RGB already and needs no reducing, so conversion
        makes no working copy of it.
    """

    source_format: str
    mode: str
    decoded_size: tuple[int, int]
    coefficient_bytes: int = 0
    row_bytes: int = 0
    as_is: bool = False
    direct_rgb: bool = False


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size :meth:`PIL.Image.Image.reduce` gives (partial blocks count)."""
    return _ceil_div(size[0], factor), _ceil_div(size[1], factor)


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The integer box-reduction that keeps the image at least as large as ``target``."""
    return max(1, max(size) // max(target))


def _kept_pixels_bytes(size: tuple[int, int]) -> int:
    """The pixels kept for the local model (at most PIXELS_MAX_SIDE) and their resize source."""
    kept = _fitted(size, PIXELS_MAX_SIDE)
    reduced = _reduced_size(size, _reduce_factor(size, kept))
    return RGB_BYTES_PER_PIXEL * (_pixels(kept) + _pixels(reduced))


def estimate_cost(header: Header, *, keep_pixels: bool) -> int:
    """The bytes :func:`prepare` holds at its peak for an image with this header.

    With ``px`` the decoded pixels, ``D = px x`` :func:`pillow_bytes_per_pixel` (Pillow's buffer)
    and ``X = px x`` :data:`DECODER_BYTES_PER_PIXEL` ``+ coefficient_bytes + row_bytes +``
    :data:`FIXED_DECODE_BYTES` (the decoder's own), the phases are:

    * decode: ``D + X`` (all that a Rekognition-bound image sent as it is costs);
    * kept pixels of an image sent as it is: ``R + D + working copy + strip + pixels``;
    * conversion: ``R + max(D + W + strip, W' + T + E) + pixels``, where ``R`` is what the
      decoder leaves behind (libwebp), ``W`` the RGB working copy (4 bytes a pixel at the
      integer-reduced size; none when the decoded image is RGB at the right scale already),
      ``W'`` the working copy or ``D``, ``T`` the image fitted into 10,000 px (resized, then
      rotated: two copies of ``T`` at most, the second replacing ``W'``), and ``E`` the JPEG
      being written (:data:`ENCODED_BYTES_PER_PIXEL`); ``R`` includes the fixed 2 MB;

    and the estimate is the largest. Every term is an upper bound of what the code allocates
    (the decoded image is released once a working copy exists); ``benchmarks/decode_memory.py
    --calibrate`` prints it next to the measured peak.
    """
    size = header.decoded_size
    px = _pixels(size)
    decoded = px * pillow_bytes_per_pixel(header.mode)
    decoding = (
        FIXED_DECODE_BYTES
        + decoded
        + px * DECODER_BYTES_PER_PIXEL.get(header.source_format, DEFAULT_DECODER_BYTES_PER_PIXEL)
        + header.coefficient_bytes
        + header.row_bytes
    )
    residue = FIXED_DECODE_BYTES + px * RESIDUE_BYTES_PER_PIXEL.get(header.source_format, 0)
    if header.as_is:
        if not keep_pixels:
            return decoding
        factor = _reduce_factor(size, _fitted(size, PIXELS_MAX_SIDE))
        working = RGB_BYTES_PER_PIXEL * _pixels(_reduced_size(size, factor))
        return max(decoding, residue + decoded + working + STRIP_BYTES + _kept_pixels_bytes(size))
    target = _fitted(size, MAX_DIMENSION)
    factor = _reduce_factor(size, target)
    working = (
        0 if header.direct_rgb and factor == 1 else RGB_BYTES_PER_PIXEL * _pixels(_reduced_size(size, factor))
    )
    fitted = RGB_BYTES_PER_PIXEL * _pixels(target)
    encoding = ENCODED_BYTES_PER_PIXEL * _pixels(target)
    kept_bytes = _kept_pixels_bytes(target) if keep_pixels else 0
    converting = (
        residue + max(decoded + working + STRIP_BYTES, (working or decoded) + fitted + encoding) + kept_bytes
    )
    return max(decoding, converting)


def _jpeg_scan_count(data: bytes) -> int:
    """Scans of a JPEG's main image (start-of-scan markers up to its end-of-image marker).

    The header segments are walked by their lengths so that an EXIF thumbnail's scan (inside
    APP1) is not counted; 0xFFDA cannot occur inside entropy-coded data (0xFF is stuffed), so the
    rest is counted by search. Unparseable: 2, the expensive answer.
    """
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 2
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == 0xDA:
            end = data.find(b"\xff\xd9", position)
            return data.count(b"\xff\xda", position, end if end >= 0 else len(data))
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return 2


def _jpeg_coefficient_bytes(image: Image) -> int:
    """The whole image's DCT coefficients, as libjpeg buffers them for a multi-scan JPEG.

    Per component: its blocks (8 x 8 samples, subsampled per its factors, padded to whole MCUs)
    at 64 coefficients of 2 bytes. Unknown components: three at full resolution.
    """
    width, height = image.size
    layers = [(int(h), int(v)) for _, h, v, _ in getattr(image, "layer", []) if h and v]
    if not layers:
        return 3 * 2 * width * height
    h_max, v_max = max(h for h, _ in layers), max(v for _, v in layers)
    total = 0
    for h, v in layers:
        blocks_wide = _ceil_div(_ceil_div(_ceil_div(width * h, h_max), 8), h) * h  # whole MCUs
        blocks_high = _ceil_div(_ceil_div(_ceil_div(height * v, v_max), 8), v) * v
        total += blocks_wide * blocks_high * 64 * 2
    return total


def _jpeg_scale(size: tuple[int, int], needed_side: int) -> int:
    """libjpeg's scale denominator (1, 2, 4 or 8) for a JPEG decoded to at least ``needed_side``
    px on its longest side, then halved further until it is at most MAX_DECODED_PIXELS."""
    scale = next(s for s in (8, 4, 2, 1) if _ceil_div(max(size), s) >= needed_side or s == 1)
    while scale < 8 and _pixels(_reduced_size(size, scale)) > MAX_DECODED_PIXELS:
        scale *= 2
    return scale


@dataclass(frozen=True)
class _Plan:
    """How one image will be decoded, decided from its header."""

    stored_size: tuple[int, int]
    high_bit_depth: bool
    draft_scale: int  # 1: decoded at full size
    header: Header
    cost: int


def _plan(image: Image, source_format: str, data: bytes, *, keep_pixels: bool) -> _Plan:
    """Check the header's size, choose a JPEG's decode scale and estimate the cost.

    :raises LabelingError: ``too_many_pixels`` or ``image_too_small``.
    """
    _check_dimensions(image.size)
    stored = image.size
    high_bit_depth = _high_bit_depth(image, source_format, data)
    scale, coefficients, row_bytes, as_is = 1, 0, 0, False
    if source_format == "JPEG":
        row_bytes = JPEG_ROW_BYTES_PER_COLUMN * stored[0]
        as_is = (
            max(stored) <= MAX_DIMENSION
            and image.mode in SENT_AS_IS_MODES
            and not high_bit_depth
            and _declared_orientation(image) == 1
        )
        if image.info.get("progressive") or _jpeg_scan_count(data) > 1:
            coefficients = _jpeg_coefficient_bytes(image)
        else:
            needed = (PIXELS_MAX_SIDE if keep_pixels else HASH_SOURCE_SIDE) if as_is else MAX_DIMENSION
            scale = _jpeg_scale(stored, needed)
    decoded = _reduced_size(stored, scale)
    if _pixels(decoded) > MAX_DECODED_PIXELS:
        width, height = stored
        why = (
            "a progressive (multi-scan) JPEG's decoder holds every coefficient of the full image"
            if coefficients
            else f"{source_format} cannot be decoded reduced (only a baseline JPEG can)"
        )
        raise _reject(
            "too_many_pixels",
            f"{width}x{height} px ({width * height / 1e6:.0f} MP): {why}, and preflight decodes at most "
            f"{MAX_DECODED_PIXELS / 1e6:.0f} MP in full",
        )
    header = Header(
        source_format,
        image.mode,
        decoded,
        coefficient_bytes=coefficients,
        row_bytes=row_bytes,
        as_is=as_is,
        direct_rgb=image.mode == "RGB" and not high_bit_depth,
    )
    return _Plan(stored, high_bit_depth, scale, header, estimate_cost(header, keep_pixels=keep_pixels))


def _draft(image: Image, plan: _Plan) -> bool:
    """Let libjpeg decode at the planned 1/2, 1/4 or 1/8 scale (every byte is still decoded, so
    truncation is still caught). Returns whether the decoded image is smaller than stored."""
    if plan.draft_scale == 1:
        return False
    width, height = plan.stored_size
    image.draft(None, (width // plan.draft_scale, height // plan.draft_scale))
    if image.size != plan.header.decoded_size:  # the plan's estimate assumed this size
        raise RuntimeError(f"JPEG draft gave {image.size}, planned {plan.header.decoded_size}")
    return True


# --- conversion -----------------------------------------------------------------------------------


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


_TRANSPOSITIONS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE"}
_TRANSPOSITIONS.update({6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"})


def _pending_orientation(image: Image) -> int:
    """The orientation still to apply to the decoded pixels (what ``ImageOps.exif_transpose``
    reads): TIFF and HEIF decoders have applied theirs already."""
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _TRANSPOSITIONS else 1


def _eight_bit_scaling(image: Image) -> tuple[str, float, float]:
    """How 16-bit (or 32-bit int, or float) grey maps to 8 bits: scaled rather than clipped to
    white, from the whole image's extrema (one pass, no copy)."""
    wide = "F" if image.mode == "F" else "I"
    extrema = cast(tuple[float, float], image.getextrema())  # one band
    low, high = float(extrema[0]), float(extrema[1])
    if wide == "I" and low >= 0 and high <= 65535:
        return wide, 255 / 65535, 0.0
    span = high - low or 1.0
    return wide, 255 / span, -low * 255 / span


def _flattened(strip: Image) -> Image:
    """RGB with transparency flattened on white."""
    from PIL import Image as PILImage

    rgba = strip.convert("RGBA")
    flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _strip_converter(image: Image, transformations: list[str]) -> Callable[[Image], Image]:
    """What turns one strip of ``image`` into 8-bit RGB: CMYK converted, high bit depths scaled,
    transparency flattened on white (recorded in ``transformations``)."""
    if image.mode == "CMYK":
        transformations.append("cmyk_to_rgb")
        return lambda strip: strip.convert("RGB")
    scaling = _eight_bit_scaling(image) if image.mode in HIGH_BIT_DEPTH_MODES else None
    alpha = image.mode in ALPHA_MODES or image.has_transparency_data
    if alpha:
        transformations.append("flattened_alpha")

    def convert(strip: Image) -> Image:
        if scaling is not None:
            wide, scale, offset = scaling
            strip = strip.convert(wide).point(lambda value: value * scale + offset).convert("L")
        if alpha:
            return _flattened(strip)
        return strip if strip.mode == "RGB" else strip.convert("RGB")

    return convert


def _rgb_reduced(image: Image, factor: int, transformations: list[str]) -> Image:
    """8-bit RGB at 1/``factor`` of the size (box-averaged), made one strip of rows at a time.

    Converting or flattening the whole image would hold one or two more full-size copies next
    to the decoded one; strip by strip, the only other full-size buffer is the result, and none
    at all when the image is RGB at the right scale already (it is returned as it is).
    """
    if image.mode == "RGB" and factor == 1:
        return image
    from PIL import Image as PILImage

    convert = _strip_converter(image, transformations)
    width, height = image.size
    result = PILImage.new("RGB", _reduced_size(image.size, factor))
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = convert(image.crop((0, top, width, min(height, top + rows))))
        result.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return result


def _resized(image: Image, size: tuple[int, int]) -> Image:
    """``image`` at ``size``: box-reduced by the largest integer factor first (cheap, and the
    source of the Lanczos step is then less than twice the target), then Lanczos."""
    from PIL import Image as PILImage

    if image.size == size:
        return image
    factor = _reduce_factor(image.size, size)
    if factor > 1:
        image = image.reduce(factor)
    return image.resize(size, PILImage.Resampling.LANCZOS)


def _model_pixels(image: Image) -> Image:
    """The RGB pixels kept for the local model: at most PIXELS_MAX_SIDE per side."""
    return _resized(image, _fitted(image.size, PIXELS_MAX_SIDE))


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
    """The decoded image as an oriented JPEG that Rekognition accepts as bytes.

    Memory: reduced and converted to RGB first (strip by strip), the decoded image released as
    soon as a working copy exists, fitted into 10,000 px, and only then rotated.
    """
    from PIL import Image as PILImage

    transformations: list[str] = []
    if info.multi_frame:
        transformations.append("first_frame")
    if info.orientation != 1:
        transformations.append("exif_transpose")
    if info.high_bit_depth:
        transformations.append("16bit_to_8bit")
    pending = _pending_orientation(image)
    target = _fitted(image.size, MAX_DIMENSION)  # fitting ignores orientation
    rgb = _rgb_reduced(image, _reduce_factor(image.size, target), transformations)
    if rgb is not image:
        image.close()  # the decoded pixels: the largest buffer of all
    if rgb.size != target:
        rgb = rgb.resize(target, PILImage.Resampling.LANCZOS)
        image.close()
    if pending != 1:
        rgb = rgb.transpose(PILImage.Transpose[_TRANSPOSITIONS[pending]])
        image.close()
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


def decode_cost(data: bytes, *, keep_pixels: bool = False) -> int:
    """The bytes :func:`prepare` would reserve from the decode budget for ``data``, read from
    its header alone (nothing is decoded).

    :raises LabelingError: the rejections the header already decides (``not_an_image``,
        ``too_many_pixels``, ``image_too_small``...).
    """
    _check_size(len(data))
    _init_pillow()
    source_format = _detect(data)
    with _open(data, source_format) as image:
        return _plan(image, source_format, data, keep_pixels=keep_pixels).cost


def prepare(obj: ObjectInfo, data: bytes, *, keep_pixels: bool = False) -> PreparedImage:
    """Check ``data`` (the bytes of ``obj``) and return what a labeler may be given.

    No I/O; it waits for its share of the process's decode budget (module docstring).
    ``obj.width``/``obj.height`` in the result are the decoded, oriented size of the original.

    :param keep_pixels: also return the decoded RGB image, at most
        :data:`~imagelabels.preflight.prepared.PIXELS_MAX_SIDE` per side (for the local model); off by
        default to save memory when Rekognition only needs the bytes or the S3 reference.
    :raises LabelingError: ``stage="preflight"``, ``retryable=False``, reason as listed in the
        module docstring.
    """
    _check_size(len(data))
    _init_pillow()  # before _detect: HEIF is decodable only once its opener is registered
    source_format = _detect(data)
    _log_disagreement(obj, source_format)
    with _open(data, source_format) as image:
        plan = _plan(image, source_format, data, keep_pixels=keep_pixels)
        with process_budget().reserve(plan.cost, what=f"s3://{obj.bucket}/{obj.key}"):
            drafted = _draft(image, plan)
            orientation, multi_frame = _decode(image, source_format)
            info = _Inspected(source_format, plan.stored_size, orientation, plan.high_bit_depth, multi_frame)
            try:
                if info.sendable_as_is(image):
                    return _as_is(obj, data, image, info, keep_pixels=keep_pixels)
                original = _oriented(plan.stored_size, orientation) if drafted else None
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
    pixels = None
    if keep_pixels:
        kept = _fitted(image.size, PIXELS_MAX_SIDE)
        pixels = _resized(_rgb_reduced(image, _reduce_factor(image.size, kept), []), kept)
    width, height = info.stored_size  # orientation 1: stored is displayed; the decode may be a draft
    if pixels is not None:
        hashes = phash_pair(pixels)
    else:  # a small RGB copy, made strip by strip (no full-size conversion of a P or RGBA image)
        hashes = phash_pair(_rgb_reduced(image, _reduce_factor(image.size, HASH_SOURCE), []))
    return PreparedImage(
        obj=replace(obj, width=width, height=height),
        data=data,
        data_format="PNG" if info.source_format == "PNG" else "JPEG",
        source_format=info.source_format,
        send_s3_reference=True,
        pixels=pixels,
        phash=hashes,
    )


def _converted(
    obj: ObjectInfo, image: Image, info: _Inspected, original: tuple[int, int] | None, *, keep_pixels: bool
) -> PreparedImage:
    """A JPEG of the oriented image, sent as bytes.

    :param original: the oriented size of the original when the decoder already scaled it
        (JPEG draft); ``None`` to take it from the decoded image.
    """
    original = original or _oriented(image.size, _pending_orientation(image))
    final, jpeg, transformations = _convert(image, info, original)
    return PreparedImage(
        obj=replace(obj, width=original[0], height=original[1]),
        data=jpeg,
        data_format="JPEG",
        source_format=info.source_format,
        send_s3_reference=False,
        transformations=transformations,
        pixels=_model_pixels(final) if keep_pixels else None,
        phash=phash_pair(final),
    )


def decode_pixels(data: bytes) -> Image:
    """RGB pixels for the local model from bytes that already passed preflight
    (``PreparedImage.data``), decoded the way :func:`prepare` decodes: reduced where the format
    allows, under the decode budget, at most PIXELS_MAX_SIDE per side, oriented as displayed.

    :raises LabelingError: ``stage="preflight"``, as :func:`prepare`.
    """
    from PIL import Image as PILImage

    _init_pillow()
    source_format = _detect(data)
    with _open(data, source_format) as image:
        plan = _plan(image, source_format, data, keep_pixels=True)
        with process_budget().reserve(plan.cost, what="a prepared image"):
            _draft(image, plan)
            _decode(image, source_format)
            pending = _pending_orientation(image)
            kept = _fitted(image.size, PIXELS_MAX_SIDE)
            pixels = _resized(_rgb_reduced(image, _reduce_factor(image.size, kept), []), kept)
            if pending != 1:
                pixels = pixels.transpose(PILImage.Transpose[_TRANSPOSITIONS[pending]])
            return pixels


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
