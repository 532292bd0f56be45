"""The ``Image`` parameter of a request: inline base64 bytes, or an S3 object read from moto.

Rekognition checks images in this order, and the stand-in does too: exactly one source, the
size limit of that source (5 MB inline, 15 MB in S3), then the format (JPEG or PNG, by content).
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

from imagelabels.devstack.standin.config import StandInConfig
from imagelabels.devstack.standin.errors import ServiceError

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_S3_TEST_KEY = "testing"  # moto accepts any credentials; not a secret


def is_supported_format(data: bytes) -> bool:
    """JPEG or PNG, judged by the first bytes like the service (the file name does not matter)."""
    return data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC)


class S3Reader:
    """Reads ``Image.S3Object`` from the configured endpoint; one shared, thread-safe client."""

    def __init__(self, config: StandInConfig) -> None:
        self._endpoint = config.s3_endpoint_url
        self._region = config.s3_region
        self._max_bytes = config.max_s3_bytes
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        # boto3 client creation is not thread-safe; the client itself is.
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self._endpoint,
                    region_name=self._region,
                    aws_access_key_id=_S3_TEST_KEY,
                    aws_secret_access_key=_S3_TEST_KEY,
                    config=Config(max_pool_connections=256, retries={"mode": "standard", "max_attempts": 3}),
                )
            return self._client

    def read(self, s3_object: Any) -> bytes:
        """The object's bytes; a missing or unreadable object is ``InvalidS3ObjectException``."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(s3_object, dict) or not all(
            isinstance(s3_object.get(key), str) and s3_object[key] for key in ("Bucket", "Name")
        ):
            raise ServiceError("InvalidParameterException", "S3Object needs a Bucket and a Name")
        if not self._endpoint:
            raise ServiceError("InvalidS3ObjectException", "the stand-in has no S3 endpoint configured")
        request = {"Bucket": s3_object["Bucket"], "Key": s3_object["Name"]}
        if s3_object.get("Version"):
            request["VersionId"] = str(s3_object["Version"])
        try:
            response = self._get_client().get_object(**request)
        except ClientError as error:
            raise ServiceError("InvalidS3ObjectException") from error
        except BotoCoreError as error:
            raise ServiceError(
                "InternalServerError", f"S3 endpoint {self._endpoint} failed: {error}"
            ) from error
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > self._max_bytes:
                raise ServiceError("ImageTooLargeException")
            return bytes(body.read())
        finally:
            body.close()


def read_image(request: dict[str, Any], s3: S3Reader, config: StandInConfig) -> bytes:
    """The image bytes of a request, validated the way Rekognition validates them."""
    image = request.get("Image")
    if not isinstance(image, dict):
        raise ServiceError("InvalidParameterException", "Image is required")
    if ("Bytes" in image) == ("S3Object" in image):
        raise ServiceError("InvalidParameterException", "Image needs exactly one of Bytes or S3Object")
    if "Bytes" in image:
        data = _decode_bytes(image["Bytes"])
        if len(data) > config.max_bytes:
            raise ServiceError("ImageTooLargeException")
    else:
        data = s3.read(image["S3Object"])
    if not is_supported_format(data):
        raise ServiceError("InvalidImageFormatException")
    return data


def _decode_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ServiceError("SerializationException", "Image.Bytes must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("SerializationException", "Image.Bytes is not valid base64") from None
