"""The only way the project sends anything to people: email, Slack, a JSON webhook.

Report delivery and alert notifications both go through these three functions, so every
message uses the same Airflow connections and fails the same way:

* ``send_email`` - the smtp provider's ``SmtpHook`` (connection type ``smtp``: host, port,
  login/password, extras ``from_email``, ``disable_tls``, ``disable_ssl``, ``timeout``,
  ``retry_limit``);
* ``post_slack`` - the slack provider's ``SlackWebhookHook`` (connection type ``slackwebhook``:
  the incoming-webhook token in ``password``, ``host`` defaulting to
  ``https://hooks.slack.com/services``);
* ``post_webhook`` - the http provider's ``HttpHook`` (connection type ``http``; ``host`` may be
  a whole base URL such as ``https://example.com/hooks``).

Each sends once and raises :class:`DeliveryError` naming the channel, the connection and what
failed; secrets (passwords, webhook tokens) are removed from the message because it ends up in
task logs and in the delivery records. Callers decide about retries (a hook's own retries stay
short), so each error says whether the message may have arrived anyway
(:attr:`DeliveryError.uncertain`: the server's answer was lost after the message went out) -
sending again then risks a duplicate. What happens after the server accepted the message (a
failing ``QUIT``, some recipients refused while others got it) is not a failure: sending again
would give the accepted recipients a second copy.

Slack's ``mrkdwn`` treats ``&``, ``<`` and ``>`` as control characters, so callers must build
Slack text with :func:`slack_escape` around every user or object string (object keys, labels,
report names) - a label such as ``<!channel>`` would otherwise ping a whole channel.
"""

from __future__ import annotations

import json
import logging
import re
import smtplib
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from mimetypes import guess_type
from pathlib import Path
from typing import Any

TIMEOUT_SECONDS = 30
logger = logging.getLogger(__name__)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SLACK_TOKEN_PATH = re.compile(r"(/services/)[^\s'\"]+")


class DeliveryError(Exception):
    """A message could not be delivered; ``str()`` says which channel, connection and why.

    ``uncertain`` is true when the message may have arrived although the call failed (the
    connection broke or timed out after the message was sent): a caller that must not send
    twice does not retry it blindly.
    """

    def __init__(
        self, channel: str, conn_id: str, reason: str, *, attempts: int = 1, uncertain: bool = False
    ) -> None:
        self.channel = channel
        self.conn_id = conn_id
        self.reason = reason
        self.attempts = attempts  # how many tries the caller made before giving up
        self.uncertain = uncertain
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        maybe = " (the message may have arrived all the same)" if uncertain else ""
        super().__init__(f"{channel} via connection {conn_id!r} failed{tries}: {reason}{maybe}")


def slack_escape(s: str) -> str:
    """Escape Slack's three control characters (``&`` first, so entities are not doubled)."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _connection_secrets(conn_id: str) -> list[str]:
    """The connection's password (the Slack token, SMTP/HTTP password) and login, to redact from
    error messages; empty when the connection itself cannot be read."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:
        return []
    return [secret.strip() for secret in (conn.password, conn.login) if secret and len(secret.strip()) > 3]


def redact(message: str, conn_id: str) -> str:
    """``message`` without the connection's secrets, URL credentials or Slack token paths."""
    for secret in sorted(_connection_secrets(conn_id), key=len, reverse=True):
        message = message.replace(secret, "***")
    message = _URL_USERINFO.sub("***@", message)
    return _SLACK_TOKEN_PATH.sub(r"\1***", message)


def _failure(channel: str, conn_id: str, error: BaseException, *, uncertain: bool = False) -> DeliveryError:
    reason = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return DeliveryError(channel, conn_id, redact(reason, conn_id), uncertain=uncertain)


def build_email(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    html: str,
    text: str | None = None,
    cc: Sequence[str] = (),
    attachments: Sequence[Path] = (),
) -> EmailMessage:
    """The MIME message: a text/plain alternative when ``text`` is given (mail clients that do
    not render HTML show it), the HTML body, then each file as an attachment named by its
    base name with a content type guessed from its suffix."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    if text is not None:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    for path in attachments:
        mime, _ = guess_type(path.name)
        maintype, _, subtype = (mime or "application/octet-stream").partition("/")
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message


def send_email(
    *,
    conn_id: str,
    to: Sequence[str],
    subject: str,
    html: str,
    text: str | None = None,
    cc: Sequence[str] = (),
    attachments: Sequence[Path] = (),
) -> list[str]:
    """Send one message through the SMTP connection ``conn_id``; return the recipients the
    server refused while accepting the message for the others (logged, not an error).

    ``SmtpHook`` opens the session (SSL or STARTTLS, login or OAuth2, its connect retries from
    the connection); the message itself is built here because the hook's own builder has no
    text/plain alternative and attaches every file as ``application/octet-stream``. An error the
    server answers (a refused sender, every recipient refused, a rejected ``DATA``) means nothing
    was delivered; a connection lost during the transaction is :attr:`DeliveryError.uncertain`;
    an error after the server accepted the message is logged, not raised.
    """
    if not to:
        raise DeliveryError("email", conn_id, "no recipients ('to' is empty)")
    missing = [str(p) for p in attachments if not Path(p).is_file()]
    if missing:
        raise DeliveryError("email", conn_id, f"attachment(s) not found: {', '.join(missing)}")
    refused: dict[str, Any] = {}
    accepted = False
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=conn_id) as hook:
            sender = hook.from_email
            if not sender:
                raise ValueError("the connection has no 'from_email' extra")
            message = build_email(
                sender=sender,
                to=to,
                subject=subject,
                html=html,
                text=text,
                cc=cc,
                attachments=[Path(p) for p in attachments],
            )
            client = hook._smtp_client  # the session the hook opened and authenticated
            if not isinstance(client, smtplib.SMTP):  # SMTP_SSL is a subclass
                raise RuntimeError(f"the SMTP hook opened no session (got {type(client).__name__})")
            refused = _transaction(client, message, sender, [*to, *cc], conn_id)
            accepted = True
    except DeliveryError:
        raise
    except Exception as error:
        if not accepted:
            raise _failure("email", conn_id, error) from error
        logger.warning(
            "email via %r: the server accepted the message, then: %s",
            conn_id,
            _failure("email", conn_id, error).reason,
        )
    if refused:
        logger.warning(
            "email via %r: the server refused recipients %s (the others got it)", conn_id, sorted(refused)
        )
    return sorted(refused)


def _transaction(
    client: smtplib.SMTP, message: EmailMessage, sender: str, recipients: list[str], conn_id: str
) -> dict[str, Any]:
    """MAIL, RCPT, DATA; the recipients refused while others were accepted."""
    try:
        return dict(client.send_message(message, from_addr=sender, to_addrs=recipients))
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException):
        raise  # the server answered no: nothing was delivered
    except OSError as error:  # SMTPServerDisconnected, a timeout: maybe after the message went out
        raise _failure("email", conn_id, error, uncertain=True) from error


def post_slack(*, conn_id: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    """Post ``text`` (and optional Block Kit ``blocks``) through a Slack incoming webhook.

    ``text`` is sent as is: build it with :func:`slack_escape` around user and object strings.
    With ``blocks``, Slack shows the blocks and uses ``text`` for notifications.
    """
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=TIMEOUT_SECONDS)
        response = hook.send(text=text, blocks=blocks)
        if response is not None and getattr(response, "status_code", 200) != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {getattr(response, 'body', '')}")
    except Exception as error:
        raise _failure("slack", conn_id, error, uncertain=isinstance(error, TimeoutError)) from error


def post_webhook(*, conn_id: str, payload: Mapping[str, Any], endpoint: str = "") -> None:
    """POST ``payload`` as JSON to the HTTP connection's base URL + ``endpoint``; any status
    outside 2xx is a failure (redirects are followed first)."""
    try:
        # ASCII-only JSON: requests sends a str body as Latin-1, so escapes keep any text intact.
        body = json.dumps(payload, default=str)
    except (TypeError, ValueError) as error:
        raise _failure("webhook", conn_id, error) from error
    try:
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="POST", http_conn_id=conn_id)
        response = hook.run(
            endpoint,
            data=body,
            headers={"Content-Type": "application/json"},
            extra_options={"timeout": TIMEOUT_SECONDS, "check_response": False},
        )
    except Exception as error:
        raise _failure("webhook", conn_id, error, uncertain=_maybe_received(error)) from error
    if not 200 <= response.status_code < 300:
        detail = (response.text or "")[:200].strip()
        raise DeliveryError(
            "webhook", conn_id, redact(f"HTTP {response.status_code} {response.reason}: {detail}", conn_id)
        )


def _maybe_received(error: BaseException) -> bool:
    """Whether an HTTP request that raised may have reached the server: the connection was
    made and then the answer timed out or the server hung up (not a refused or timed-out
    connect, where nothing was sent)."""
    import requests

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(error, requests.exceptions.ReadTimeout):
        return True
    return isinstance(error, requests.exceptions.ConnectionError) and "Connection aborted" in str(error)
