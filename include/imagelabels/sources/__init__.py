"""Sources: where the images come from, and the references that carry them through XCom.

* :mod:`.listing` - the objects of a bucket/prefix that arrived in one data interval (streamed);
* :mod:`.manifests` - batch manifests in S3: what a mapped task gets instead of a key list;
* :mod:`.objects` - what S3 knows of one object (version, content type, title);
* :mod:`.events` - S3 event messages (direct, via SNS, via EventBridge) parsed and ordered;
* :mod:`.sqs` - draining, keeping in flight and acknowledging the queue.

May import: settings, errors, documents. Nothing above (no preflight, labeler or engine):
a source only says which objects exist.
"""

from __future__ import annotations
