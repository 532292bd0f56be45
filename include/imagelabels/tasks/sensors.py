"""Wait for SQS messages on the triggerer, without receiving them.

Why not the Amazon provider's ``SqsSensor`` (or Airflow 3's ``AssetWatcher`` +
``MessageQueueTrigger``, which uses the same SQS trigger)? Both *receive* messages to find out
that there are some: with ``delete_message_on_reception=True`` (the default) a message is gone
before its image is indexed, so a failing labeling task loses it; with ``False`` the received
messages are hidden for their visibility timeout, so the task that should process them cannot
see them. This sensor instead asks ``GetQueueAttributes`` for the queue depth: it touches no
message, and the drain task that follows receives, processes and deletes them itself.

While it waits, the sensor is deferred: the wait runs in the triggerer and holds no worker slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.triggers.base import BaseTrigger, TriggerEvent

DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed")


def queue_depth(aws_conn_id: str, queue_url: str) -> int:
    """Messages ready (or about to be) on the queue; in-flight ones are another run's."""
    from imagelabels.clients import aws_client

    attributes = aws_client("sqs", aws_conn_id).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(DEPTH_ATTRIBUTES)
    )["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in DEPTH_ATTRIBUTES)


class SqsMessagesAvailableTrigger(BaseTrigger):
    """Fires once the queue holds at least one message, polling its depth every ``poll_interval``."""

    def __init__(self, queue_url: str, aws_conn_id: str, poll_interval: float = 20.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "queue_url": self.queue_url,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            # boto3 is blocking: run it in a thread so the triggerer's event loop stays free
            depth = await asyncio.to_thread(queue_depth, self.aws_conn_id, self.queue_url)
            if depth > 0:
                yield TriggerEvent({"status": "messages", "depth": depth})  # type: ignore[no-untyped-call]
                return
            await asyncio.sleep(self.poll_interval)


class SqsMessagesAvailableSensor(BaseSensorOperator):
    """Succeeds when the queue has messages; deferred (no worker slot) while it is empty.

    :param queue_url: templated, so it can come from a Param or a setting.
    :param skip_when: a templated flag; when it renders true the sensor succeeds at once (the
        "retry failed only" mode does not wait for new events).
    """

    template_fields: Sequence[str] = ("queue_url", "skip_when")

    def __init__(
        self,
        *,
        queue_url: str,
        aws_conn_id: str | None = None,
        skip_when: str = "False",
        poll_interval: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.skip_when = skip_when
        self.poll_interval = poll_interval

    def _conn_id(self) -> str:
        from imagelabels import settings

        return self.aws_conn_id or settings.aws_conn_id()

    def _resolved_queue_url(self) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from imagelabels import settings

        url = str(self.queue_url or "").strip() or settings.env("QUEUE_URL").strip()
        if not url:  # a configuration error: retrying cannot help
            raise AirflowFailException("no queue: set the 'queue_url' Param or IMAGELABELS_QUEUE_URL")
        return url

    def poke(self, context: Context) -> bool:
        if str(self.skip_when).strip().lower() in {"true", "1", "yes"}:
            return True
        return queue_depth(self._conn_id(), self._resolved_queue_url()) > 0

    def execute(self, context: Context) -> Any:
        if self.poke(context):
            return True
        self.defer(
            trigger=SqsMessagesAvailableTrigger(
                self._resolved_queue_url(), self._conn_id(), self.poll_interval
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> bool:
        self.log.info("queue has messages: %s", event)
        return True
