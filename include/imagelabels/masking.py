"""Keep AWS secrets out of logs: register them, raw and URL-encoded, with Airflow's log masker.

Below every stage (it imports nothing of the project), because the engine layer signs with SigV4
from an Airflow AWS connection and :mod:`imagelabels.clients` builds the S3 and Rekognition clients:
both must mask what they sign with.
"""

from __future__ import annotations

from typing import Any


def mask_aws_credentials(hook: Any) -> None:
    """Register the hook's secret key and session token, raw and URL-encoded, with Airflow's
    log masker.

    Airflow masks a connection's password and sensitive extras as they are, but botocore's
    DEBUG logs (the canonical request of every presigned URL) and presigned links carry the
    session token URL-encoded (``/``, ``+`` and ``=`` escaped), which the masker does not match;
    credentials from an assumed role or the default chain are not connection values at all.
    """
    from urllib.parse import quote

    from airflow.sdk.log import mask_secret

    try:
        credentials = hook.get_credentials()
    except Exception:  # no credentials yet: the client's first call reports it
        return
    for secret in (credentials.secret_key, credentials.token):
        if secret:
            mask_secret(secret)
            mask_secret(quote(secret, safe=""))


def mask_session_credentials(session: Any, client: Any) -> None:
    """Register the secret key and session token ``client`` signs with, raw and URL-encoded, with
    Airflow's log masker: now, and again before every signature (``before-sign``), because
    refreshable credentials (an assumed role) get a new token as they near expiry.

    ``session`` is the boto3 session ``client`` was made from: its credentials object is the one
    the client signs with. (``AwsBaseHook.get_credentials()`` would not do: it builds another
    session, and for a role connection that is another AssumeRole with another token.)"""
    credentials = session.get_credentials()
    if credentials is None:  # none at all: signing fails with NoCredentialsError, nothing to mask
        return

    def mask_current(**_: Any) -> None:
        _mask_pair(credentials.get_frozen_credentials())

    mask_current()
    client.meta.events.register("before-sign.s3", mask_current)


def _mask_pair(frozen: Any) -> None:
    from urllib.parse import quote

    from airflow.sdk.log import mask_secret

    for secret in (frozen.secret_key, frozen.token):
        if secret:
            mask_secret(secret)
            mask_secret(quote(secret, safe=""))
