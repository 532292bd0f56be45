"""The SQS side of event-driven ingestion: drain, keep in flight, acknowledge.

The delivery guarantee is *at least once, nothing lost*:

* a message is received with a visibility timeout long enough for the run, and stays invisible
  while its batch is processed (:class:`VisibilityKeeper` extends it);
* it is deleted only after every image it names is indexed, recorded as failed, deleted from the
  index (a removal), or known to be superseded by a newer event;
* a crash anywhere before that leaves it on the queue: it becomes visible again when its timeout
  expires and a later run processes it. Deterministic document ids make that redelivery harmless
  (no duplicates);
* a body we cannot parse is *not* deleted: it is made visible again at once, so after the queue's
  ``maxReceiveCount`` receives SQS moves it to the dead-letter queue (redrive policy), with its
  reason logged here each time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_PER_RECEIVE = 10  # SQS's limit for ReceiveMessage and the *Batch calls


@dataclass(frozen=True)
class QueueSettings:
    """How a run talks to its queue.

    :param wait_seconds: long polling of each receive (at most 20).
    :param visibility_timeout: seconds a received message stays invisible; the keeper extends it
        while the message's batch is processed.
    :param max_messages: per-run cap, so one run ends and reports even under a flood.
    """

    queue_url: str
    wait_seconds: int = 5
    visibility_timeout: int = 900
    max_messages: int = 5000

    def __post_init__(self) -> None:
        if not self.queue_url:
            raise ValueError("no queue: set the 'queue_url' Param or IMAGELABELS_QUEUE_URL")
        if not 0 <= self.wait_seconds <= 20:
            raise ValueError(f"wait_seconds must be within 0..20, got {self.wait_seconds}")
        if not 1 <= self.visibility_timeout <= 43200:
            raise ValueError(f"visibility_timeout must be within 1..43200 s, got {self.visibility_timeout}")
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")


def check_queue(sqs: Any, queue_url: str) -> dict[str, str]:
    """Fail fast on a wrong queue URL or missing permission; warn when no dead-letter queue is
    configured (a malformed message would then come back forever)."""
    attributes: dict[str, str] = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    if "RedrivePolicy" not in attributes:
        log.warning(
            "queue %s has no RedrivePolicy: malformed messages cannot reach a dead-letter queue and "
            "will be received again every run; configure one (see README, Event-driven ingestion)",
            queue_url,
        )
    return attributes


def receive(sqs: Any, settings: QueueSettings) -> Iterator[dict[str, Any]]:
    """Receive until the queue looks empty or the run's cap is reached (10 per call, long
    polling). Messages are yielded as they arrive, so the caller can stream them."""
    received = 0
    while received < settings.max_messages:
        wanted = min(MAX_PER_RECEIVE, settings.max_messages - received)
        response = sqs.receive_message(
            QueueUrl=settings.queue_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=settings.wait_seconds,
            VisibilityTimeout=settings.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return
        received += len(messages)
        yield from messages


def _chunks(items: Sequence[str], size: int = MAX_PER_RECEIVE) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def delete(sqs: Any, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
    """Delete (acknowledge) messages; return the error of each one that could not be deleted."""
    errors: list[str] = []
    for chunk in _chunks(list(dict.fromkeys(receipt_handles))):
        entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
        response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        errors += [f"{f.get('Code')}: {f.get('Message')}" for f in response.get("Failed", [])]
    return errors


def change_visibility(sqs: Any, queue_url: str, receipt_handles: Sequence[str], seconds: int) -> list[str]:
    """Set the visibility timeout of in-flight messages (0 = visible again now)."""
    errors: list[str] = []
    for chunk in _chunks(list(dict.fromkeys(receipt_handles))):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
            for i, handle in enumerate(chunk)
        ]
        response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        errors += [f"{f.get('Code')}: {f.get('Message')}" for f in response.get("Failed", [])]
    return errors


class VisibilityKeeper:
    """Keeps a batch's messages invisible while it is processed.

    Every ``every`` seconds (a third of the timeout) a background thread pushes their visibility
    timeout ``timeout`` seconds into the future, so a long batch is never handed to a second
    consumer. Use as a context manager around the batch's work.
    """

    def __init__(self, sqs: Any, queue_url: str, receipt_handles: Sequence[str], timeout: int) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._handles = list(receipt_handles)
        self._timeout = timeout
        self._every = max(1.0, timeout / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)
        self.extensions = 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.extend()

    def extend(self) -> None:
        """Push the timeout of every message of the batch forward now."""
        if not self._handles:
            return
        errors = change_visibility(self._sqs, self._queue_url, self._handles, self._timeout)
        self.extensions += 1
        if errors:
            log.warning("could not extend visibility of %d message(s): %s", len(errors), errors[:3])

    def __enter__(self) -> VisibilityKeeper:
        self.extend()  # the batch may have waited in the executor's queue since the receive
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def body_preview(body: str, limit: int = 200) -> str:
    """A short, single-line excerpt of a message body for logs."""
    text = json.dumps(body)[1:-1] if not body.isprintable() else body
    return text[:limit] + ("..." if len(text) > limit else "")
