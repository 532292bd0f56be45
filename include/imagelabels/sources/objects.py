"""Read what S3 knows about one object: version, content type and title.

``HeadObject`` gives the version id (``ListObjectsV2`` does not), which the document id needs.
Pixel size and format come later, from preflight (:mod:`imagelabels.preflight.checks`), which reads the
bytes anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from imagelabels.documents import ObjectInfo
from imagelabels.errors import LabelingError
from imagelabels.sources.listing import ListedObject

log = logging.getLogger(__name__)

TITLE_METADATA_KEY = "title"  # x-amz-meta-title, if the uploader set one


class ObjectChanged(Exception):
    """The object was overwritten after it was listed; its new version belongs to a later run."""


def describe_object(s3_client: Any, bucket: str, listed: ListedObject) -> ObjectInfo:
    """HEAD the object and return its metadata.

    :raises LabelingError: ``object_gone`` when it was deleted after the listing.
    :raises ObjectChanged: when its ETag no longer matches the listing.
    """
    from botocore.exceptions import ClientError

    try:
        head = s3_client.head_object(Bucket=bucket, Key=listed.key)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            raise LabelingError(
                "object_gone", f"s3://{bucket}/{listed.key} was deleted after listing", retryable=False
            ) from error
        raise LabelingError(f"s3_head_{code or 'error'}", str(error), retryable=True) from error
    etag = str(head.get("ETag", "")).strip('"')
    if listed.etag and etag != listed.etag:
        raise ObjectChanged(f"s3://{bucket}/{listed.key}: ETag {listed.etag} became {etag}")
    metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    return ObjectInfo(
        bucket=bucket,
        key=listed.key,
        size=int(head.get("ContentLength", listed.size)),
        etag=etag,
        last_modified=head.get("LastModified", listed.last_modified),
        version_id=head.get("VersionId"),
        content_type=head.get("ContentType"),
        title=metadata.get(TITLE_METADATA_KEY) or None,
    )
