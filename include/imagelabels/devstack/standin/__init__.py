"""A Rekognition-compatible stand-in server for tests and benchmarks.

It speaks the real wire protocol (JSON 1.1, ``X-Amz-Target: RekognitionService.<Op>``) for
DetectLabels, DetectModerationLabels, DetectText and DetectFaces, so the pipeline uses the real
boto3 client with ``endpoint_url``. Latency, per-operation TPS quotas (answered with
``ThrottlingException`` / ``ProvisionedThroughputExceededException``), injected error rates and
the source of labels (canned or the local model) are configurable; ``Image.S3Object`` is read from
the moto server.

Nothing here imports boto3 or Pillow at module level: importing the package is cheap.
"""

from __future__ import annotations

from typing import Any

from imagelabels.devstack.standin.config import OPERATIONS, StandInConfig, parse_args
from imagelabels.devstack.standin.errors import ERRORS
from imagelabels.devstack.standin.process import fetch_stats, reset_stats, start_standin_process
from imagelabels.devstack.standin.server import StandInServer

__all__ = [
    "ERRORS",
    "OPERATIONS",
    "StandInConfig",
    "StandInServer",
    "fetch_stats",
    "parse_args",
    "rekognition_client",
    "reset_stats",
    "start_standin_process",
]


def rekognition_client(
    url: str,
    *,
    retry_mode: str = "standard",
    max_attempts: int = 1,
    max_pool_connections: int = 10,
    region: str = "us-east-1",
) -> Any:
    """A real boto3 ``rekognition`` client pointed at a stand-in (dummy credentials).

    :param max_attempts: attempts in all, the first included (botocore's ``total_max_attempts``;
        its ``max_attempts`` key counts retries only, so ``{"max_attempts": 1}`` still retries once).
        ``1`` shows raw throttling; ``retry_mode="adaptive"`` with more attempts is what a
        production client does.
    """
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "rekognition",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
        ),
    )
