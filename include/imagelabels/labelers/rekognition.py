"""AWS Rekognition ``DetectLabels`` as a labeler.

The image is passed as an ``S3Object`` reference, so workers never download it: Rekognition
reads it from S3 directly (the object must be in the same region as the Rekognition endpoint).
"""

from __future__ import annotations

from typing import Any

from imagelabels.documents import LabelResult, ObjectInfo
from imagelabels.labelers.base import LabelingError, LabelingSettings

# Rekognition error codes that describe the image itself: retrying cannot help.
_PERMANENT_ERRORS = {
    "InvalidImageFormatException": "invalid_image_format",
    "ImageTooLargeException": "image_too_large",
    "InvalidS3ObjectException": "s3_object_unreadable",
    "InvalidParameterException": "invalid_parameter",
}


class RekognitionLabeler:
    """Labels images with ``DetectLabels``.

    :param client: a boto3 ``rekognition`` client (built from an Airflow AWS connection).
    :param settings: minimum confidence and maximum number of labels.
    """

    name = "rekognition"

    def __init__(self, client: Any, settings: LabelingSettings) -> None:
        self._client = client
        self._settings = settings

    def _request(self, obj: ObjectInfo) -> dict[str, Any]:
        s3_object: dict[str, str] = {"Bucket": obj.bucket, "Name": obj.key}
        if obj.version_id and obj.version_id != "null":
            s3_object["Version"] = obj.version_id
        request: dict[str, Any] = {
            "Image": {"S3Object": s3_object},
            "MinConfidence": self._settings.min_confidence,
        }
        if self._settings.max_labels is not None:
            request["MaxLabels"] = self._settings.max_labels
        return request

    def label(self, obj: ObjectInfo) -> LabelResult:
        """Call DetectLabels and normalize its answer; map errors to :class:`LabelingError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.detect_labels(**self._request(obj))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            message = error.response.get("Error", {}).get("Message", str(error))
            if code in _PERMANENT_ERRORS:
                raise LabelingError(_PERMANENT_ERRORS[code], message, retryable=False) from error
            raise LabelingError(f"rekognition_{code}", message, retryable=True) from error
        except BotoCoreError as error:
            raise LabelingError("rekognition_unreachable", str(error), retryable=True) from error
        return LabelResult(
            labels=list(response.get("Labels", [])),
            labeler=self.name,
            label_model_version=str(response.get("LabelModelVersion", "unknown")),
            min_confidence=self._settings.min_confidence,
            max_labels=self._settings.max_labels,
        )
