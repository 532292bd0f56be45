"""AWS Rekognition as a labeler: DetectLabels, plus DetectModerationLabels, DetectText and
DetectFaces when the run asks for those features.

An image that preflight left untouched is passed as an ``S3Object`` reference, so workers never
upload it: Rekognition reads it from S3 (up to 15 MB; the object must be in the endpoint's
region). A converted image (WebP, HEIC, rotated, resized...) is sent as bytes (at most 5 MB).

Every call first takes a token from the shared rate limiter (:mod:`imagelabels.labelers.ratelimit`), so
all mapped tasks together stay at the account's quota instead of provoking throttling; botocore's
adaptive retries absorb whatever throttling still happens. Only when those retries are exhausted
does the image fail, as a *retryable* failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagelabels.documents import LabelResult
from imagelabels.errors import LabelingError
from imagelabels.labelers.base import LabelingSettings
from imagelabels.labelers.ratelimit import RateLimiter, Unlimited
from imagelabels.preflight.prepared import PreparedImage

# Rekognition error codes that describe the image itself: retrying cannot help.
_PERMANENT_ERRORS = {
    "InvalidImageFormatException": "invalid_image_format",
    "ImageTooLargeException": "image_too_large",
    "InvalidS3ObjectException": "s3_object_unreadable",
    "InvalidParameterException": "invalid_parameter",
}
_THROTTLING_ERRORS = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
}


class RekognitionLabeler:
    """Labels images with Rekognition.

    :param client: a boto3 ``rekognition`` client (built from an Airflow AWS connection).
    :param settings: features, thresholds and label filters of the run.
    :param limiter: rate limit shared by every task calling Rekognition in this account/region.
    """

    name = "rekognition"
    # Calls mostly wait on the network (~100-300 ms each); the rate limiter, not the thread count,
    # bounds the request rate, so enough threads keep the quota busy even with one batch running.
    preferred_concurrency = 16

    def __init__(self, client: Any, settings: LabelingSettings, limiter: RateLimiter | None = None) -> None:
        self._client = client
        self._settings = settings
        self._limiter = limiter or Unlimited()

    @staticmethod
    def image_argument(image: PreparedImage) -> dict[str, Any]:
        """``Image`` request field: an S3 reference for untouched objects, else the bytes."""
        obj = image.obj
        if not image.send_s3_reference:
            return {"Bytes": image.data}
        s3_object: dict[str, str] = {"Bucket": obj.bucket, "Name": obj.key}
        if obj.version_id and obj.version_id != "null":
            s3_object["Version"] = obj.version_id
        return {"S3Object": s3_object}

    def detect_labels_request(self, image: PreparedImage) -> dict[str, Any]:
        """DetectLabels arguments for this run's settings."""
        request: dict[str, Any] = {
            "Image": self.image_argument(image),
            "MinConfidence": self._settings.min_confidence,
        }
        if self._settings.max_labels is not None:
            request["MaxLabels"] = self._settings.max_labels
        features = ["GENERAL_LABELS"] + (["IMAGE_PROPERTIES"] if self._settings.image_properties else [])
        if features != ["GENERAL_LABELS"] or self._settings.label_filters:
            request["Features"] = features
        if self._settings.label_filters:
            request["Settings"] = {"GeneralLabels": dict(self._settings.label_filters)}
        return request

    def _call(self, operation: str, method: Callable[..., dict[str, Any]], **request: Any) -> dict[str, Any]:
        """One rate-limited call, with Rekognition's errors mapped to :class:`LabelingError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._limiter.acquire(operation)
        try:
            return method(**request)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "Unknown"))
            message = str(error.response.get("Error", {}).get("Message", error))
            if code in _PERMANENT_ERRORS:
                raise LabelingError(_PERMANENT_ERRORS[code], message, retryable=False) from error
            if code in _THROTTLING_ERRORS:
                attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                raise LabelingError(
                    "rekognition_throttled",
                    f"{operation} still throttled after {attempts} retries: {message}",
                    retryable=True,
                ) from error
            raise LabelingError(f"rekognition_{code}", f"{operation}: {message}", retryable=True) from error
        except BotoCoreError as error:
            raise LabelingError("rekognition_unreachable", f"{operation}: {error}", retryable=True) from error

    def label(self, image: PreparedImage) -> LabelResult:
        """Run every feature of the run on one image and return one normalized result."""
        settings = self._settings
        client = self._client
        labels = self._call("DetectLabels", client.detect_labels, **self.detect_labels_request(image))
        moderation: dict[str, Any] = {}
        if settings.wants("moderation"):
            moderation = self._call(
                "DetectModerationLabels",
                client.detect_moderation_labels,
                Image=self.image_argument(image),
                MinConfidence=settings.moderation_min_confidence,
            )
        text: dict[str, Any] = {}
        if settings.wants("text"):
            text = self._call(
                "DetectText",
                client.detect_text,
                Image=self.image_argument(image),
                Filters={"WordFilter": {"MinConfidence": settings.text_min_confidence}},
            )
        faces: dict[str, Any] = {}
        if settings.wants("faces"):
            faces = self._call(
                "DetectFaces", client.detect_faces, Image=self.image_argument(image), Attributes=["DEFAULT"]
            )
        return LabelResult(
            labels=list(labels.get("Labels", [])),
            labeler=self.name,
            label_model_version=str(labels.get("LabelModelVersion", "unknown")),
            min_confidence=settings.min_confidence,
            max_labels=settings.max_labels,
            features=settings.features,
            moderation_labels=list(moderation.get("ModerationLabels", [])),
            moderation_model_version=moderation.get("ModerationModelVersion"),
            text_detections=[
                t
                for t in text.get("TextDetections", [])
                if t.get("Type") == "LINE" and float(t.get("Confidence", 0)) >= settings.text_min_confidence
            ],
            face_details=list(faces.get("FaceDetails", [])),
            image_properties=labels.get("ImageProperties"),
        )
