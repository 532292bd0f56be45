"""The one error every stage raises for an image it cannot process (read, preflight, label, index).

It lives below the stages because each of them raises it and the batch turns it into a failure
record (reason, stage, retryable) whatever stage it came from.
"""

from __future__ import annotations


class LabelingError(Exception):
    """An image could not be labeled.

    :param reason: a short stable code for reports (``invalid_image_format``, ``object_gone``...).
    :param retryable: ``False`` when retrying cannot help (the image itself is bad); ``True`` when
        the cause is outside the image (throttling after retries, service errors, permissions).
    :param stage: where it failed: ``read``, ``preflight``, ``label`` or ``index``.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool, stage: str = "label") -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.stage = stage
