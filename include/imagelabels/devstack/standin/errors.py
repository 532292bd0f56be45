"""Rekognition's errors, as the stand-in answers them.

In the JSON 1.1 protocol botocore reads the error code from the body's ``__type`` (and the
message from ``Message`` or ``message``); the real service also sends ``x-amzn-ErrorType``, so the
stand-in sends both. The HTTP status matters too: botocore's retry logic treats 5xx as transient
and recognises throttling by code.
"""

from __future__ import annotations

# code -> (HTTP status, the message the real service sends)
ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (400, "Rate exceeded"),
    "ProvisionedThroughputExceededException": (400, "Provisioned Rate exceeded"),
    "InternalServerError": (500, "Internal server error"),
    "InvalidImageFormatException": (400, "Request has invalid image format"),
    "ImageTooLargeException": (400, "Image size is too large"),
    "InvalidS3ObjectException": (
        400,
        "Unable to get object metadata from S3. Check object key, region and/or access permissions.",
    ),
    "InvalidParameterException": (400, "Request has invalid parameters"),
    "AccessDeniedException": (400, "User is not authorized to perform this action"),
    "SerializationException": (400, "Request body is not valid JSON"),
    "UnknownOperationException": (400, "Unknown operation"),
}


class ServiceError(Exception):
    """An error answer: ``code`` from :data:`ERRORS`, an optional more specific message."""

    def __init__(self, code: str, message: str | None = None) -> None:
        status, default_message = ERRORS[code]
        super().__init__(f"{code}: {message or default_message}")
        self.code = code
        self.status = status
        self.message = message or default_message

    def body(self) -> dict[str, str]:
        """The JSON 1.1 error body botocore parses."""
        return {"__type": self.code, "Message": self.message}
