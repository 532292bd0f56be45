"""What preflight hands to a labeler: one image that Rekognition (or the local model) accepts.

Preflight (:mod:`imagelabels.preflight.checks`) reads the object, checks it by its magic bytes and
fixes what can be fixed (format conversion, EXIF orientation, oversize); the result is a
:class:`PreparedImage`. Labelers take only this type, so no labeler ever sees a bad object and no
paid API call is spent on one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from imagelabels.documents import ObjectInfo

# Rekognition's limits (https://docs.aws.amazon.com/rekognition/latest/dg/limits.html).
MAX_S3_OBJECT_BYTES = 15 * 1024 * 1024  # an image passed as an S3Object reference
MAX_INLINE_BYTES = 5 * 1024 * 1024  # an image passed as raw bytes
MAX_DIMENSION = 10_000  # larger sides are resized down
MIN_DIMENSION = 80  # smaller sides are rejected
# The pixels kept for the local model: no local model looks at more (the classifier at 256 px,
# faces at 1,024, RapidOCR's text detector at 2,000), and 16 MB a thread at most stays outside
# the decode budget while the image is labeled.
PIXELS_MAX_SIDE = 2048


@dataclass(frozen=True)
class PreparedImage:
    """An image that passed preflight.

    :param obj: the S3 object version; ``width``/``height`` are the decoded, EXIF-oriented size
        of the original.
    :param data: JPEG or PNG bytes ready to send. When ``send_s3_reference`` is true these are the
        object's own bytes (possibly above 5 MB); otherwise they are converted bytes of at most
        :data:`MAX_INLINE_BYTES`.
    :param data_format: ``"JPEG"`` or ``"PNG"``: the format of ``data``.
    :param source_format: the format detected from the original's magic bytes (``JPEG``, ``PNG``,
        ``WEBP``, ``GIF``, ``BMP``, ``TIFF``, ``HEIF``...).
    :param send_s3_reference: the original is acceptable as-is, so Rekognition can read it from S3
        (``Image.S3Object``) instead of receiving bytes.
    :param transformations: what preflight changed, e.g. ``("exif_transpose", "converted:WEBP")``.
    :param pixels: the decoded image (a Pillow ``Image`` in RGB, oriented like ``data`` and
        fitted into :data:`PIXELS_MAX_SIDE`), so a local model does not decode twice; ``None``
        when not kept.
    :param phash: the 64-bit perceptual hash of the image and of its mirror image (hex,
        :func:`imagelabels.fingerprints.phash_pair`), computed from what preflight decoded, for
        every image whatever the labeler; ``None`` only when built elsewhere.
    """

    obj: ObjectInfo
    data: bytes
    data_format: Literal["JPEG", "PNG"]
    source_format: str
    send_s3_reference: bool
    transformations: tuple[str, ...] = ()
    pixels: Any = field(default=None, compare=False, repr=False)
    phash: tuple[str, str] | None = field(default=None, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """Pixel size of ``data`` (after any resize): what a labeler's boxes are relative to.

        Not the size of ``pixels``, which may be smaller still.
        """
        if self.send_s3_reference:
            return int(self.obj.width or 0), int(self.obj.height or 0)
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:  # reads the header only
            return int(image.width), int(image.height)
