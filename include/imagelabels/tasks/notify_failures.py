"""Failure notifications: a failed run tells the people the deployment names, by email and/or
Slack, through Airflow's notifiers and the connections the reports use.

Every DAG has :func:`notify_failures` as its (DAG-level) ``on_failure_callback``. It is a plain
function, so parsing a DAG file imports nothing heavy; the settings are read and the notifiers
(``SmtpNotifier``, ``SlackWebhookNotifier``) built only when a run has failed. Settings:

* ``IMAGELABELS_FAILURE_EMAIL`` - recipients, separated by ``,`` or ``;``; mail goes through
  the ``smtp_default`` connection (its ``from_email`` extra is the sender);
* ``IMAGELABELS_FAILURE_SLACK`` - ``true`` posts to the ``slack_webhook_default`` connection;
* per DAG, ``IMAGELABELS_FAILURE_EMAIL__<DAG_ID>`` / ``IMAGELABELS_FAILURE_SLACK__<DAG_ID>``
  (DAG id upper-cased, other characters as ``_``) replace the general value for that DAG; set
  to empty (or ``false`` for Slack) to turn a channel off for it.

Nothing configured: nothing is sent. Airflow 3 runs DAG callbacks in the DAG processor, so the
settings must be in its environment.

Run ids and conf are data typed by users: the notifiers are called through ``notify()``, which
renders none of our texts as Jinja (their ``__call__`` would), and the texts are escaped for
HTML and Slack.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from imagelabels.settings import environment

SMTP_CONN_ID = "smtp_default"
SLACK_CONN_ID = "slack_webhook_default"
EMAIL_SETTING = "IMAGELABELS_FAILURE_EMAIL"
SLACK_SETTING = "IMAGELABELS_FAILURE_SLACK"
_ADDRESS = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off", "none"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailureChannels:
    """Where one DAG's failures go: email recipients (none: no mail) and whether to post to Slack."""

    email: tuple[str, ...] = ()
    slack: bool = False

    def __bool__(self) -> bool:
        return bool(self.email or self.slack)


@dataclass(frozen=True)
class FailureMessage:
    """What failed, as plain text pieces (escaped where they are used)."""

    dag_id: str
    run_id: str
    task: str
    reason: str
    interval: str
    log_url: str

    @property
    def subject(self) -> str:
        """One line: a run id may hold anything, newlines included."""
        line = f"[imagelabels] {self.dag_id} failed: task {self.task}, run {self.run_id}"
        return " ".join(line.split())

    def html(self) -> str:
        rows = [
            ("DAG", self.dag_id),
            ("Run", self.run_id),
            ("Failed task", self.task),
            ("Reason", self.reason),
            ("Data interval", self.interval),
        ]
        cells = "".join(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
        link = f'<p><a href="{html.escape(self.log_url)}">Task log</a></p>' if self.log_url else ""
        return f"<p>A run of {html.escape(self.dag_id)} failed.</p><table>{cells}</table>{link}"

    def slack_text(self) -> str:
        from imagelabels.channels import slack_escape

        text = (
            f":red_circle: *{slack_escape(self.dag_id)}* failed - task `{slack_escape(self.task)}`, "
            f"run `{slack_escape(self.run_id)}` ({slack_escape(self.reason)}; "
            f"interval {slack_escape(self.interval)})"
        )
        return f"{text}\n<{slack_escape(self.log_url)}|Task log>" if self.log_url else text


def _setting_name(base: str, dag_id: str) -> str:
    return f"{base}__{re.sub(r'[^A-Za-z0-9]', '_', dag_id).upper()}"


def _setting(base: str, dag_id: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(name, value) of the per-DAG setting when it is set (even empty), else the general one."""
    per_dag = _setting_name(base, dag_id)
    if per_dag in environ:
        return per_dag, environ[per_dag].strip()
    return base, environ.get(base, "").strip()


def channels_for(dag_id: str, environ: Mapping[str, str] | None = None) -> FailureChannels:
    """The configured channels of ``dag_id``.

    :raises ValueError: naming the setting, for an address that is not one or a Slack switch
        that is neither true nor false.
    """
    environ = environment() if environ is None else environ
    email_name, email_value = _setting(EMAIL_SETTING, dag_id, environ)
    recipients = tuple(a.strip() for a in re.split(r"[,;]", email_value) if a.strip())
    if email_value.lower() in _FALSE:
        recipients = ()
    bad = [address for address in recipients if not _ADDRESS.match(address)]
    if bad:
        raise ValueError(f"{email_name}: not an email address: {', '.join(map(repr, bad))}")
    slack_name, slack_value = _setting(SLACK_SETTING, dag_id, environ)
    if slack_value.lower() not in _TRUE | _FALSE:
        raise ValueError(f"{slack_name}={slack_value!r}: use true or false")
    return FailureChannels(email=recipients, slack=slack_value.lower() in _TRUE)


def _describe(context: Mapping[str, Any]) -> FailureMessage:
    """The message of a DAG-level failure callback's context (the processor's or dag.test()'s:
    ``ti`` is the task instance whose failure failed the run, when there is one)."""
    dag = context.get("dag")
    ti = context.get("ti")
    task = "(none: the run failed without a failed task)"
    log_url = ""
    if ti is not None:
        map_index = getattr(ti, "map_index", -1)
        task = str(ti.task_id) + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")
        try:
            log_url = str(ti.log_url)
        except Exception:  # the link only adds to the message
            log_url = ""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    return FailureMessage(
        dag_id=str(getattr(dag, "dag_id", "?")),
        run_id=str(context.get("run_id") or getattr(ti, "run_id", "?")),
        task=task,
        reason=str(context.get("reason") or "failed"),
        interval=f"[{start}, {end})" if start is not None else "none (run without a logical date)",
        log_url=log_url,
    )


def _mail(channels: FailureChannels, message: FailureMessage) -> Any:
    """The smtp provider's notifier for ``smtp_default``, sender from its ``from_email`` extra
    (given, not left to the notifier: it would render the connection's value as a template)."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import BaseHook

    sender = BaseHook.get_connection(SMTP_CONN_ID).extra_dejson.get("from_email")
    if not sender:
        raise ValueError(f"connection {SMTP_CONN_ID!r} has no 'from_email' extra")
    return SmtpNotifier(
        from_email=str(sender),
        to=list(channels.email),
        subject=message.subject,
        html_content=message.html(),
        smtp_conn_id=SMTP_CONN_ID,
    )


def _slack(channels: FailureChannels, message: FailureMessage) -> Any:
    """The slack provider's incoming-webhook notifier for ``slack_webhook_default``."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    return SlackWebhookNotifier(slack_webhook_conn_id=SLACK_CONN_ID, text=message.slack_text())


def _notifiers(channels: FailureChannels) -> list[tuple[str, str, Callable[..., Any]]]:
    """(channel, connection id, notifier builder) for each configured channel; built one by one
    when sending, so a channel that cannot even be built does not stop the others."""
    built: list[tuple[str, str, Callable[..., Any]]] = []
    if channels.email:
        built.append(("email", SMTP_CONN_ID, _mail))
    if channels.slack:
        built.append(("slack", SLACK_CONN_ID, _slack))
    return built


def notify_failures(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` of every DAG: send what failed to the DAG's configured channels.

    Each channel is tried on its own (a dead Slack does not stop the mail); failures are logged
    without connection secrets and never raised (the run has failed already).
    """
    from imagelabels.channels import redact

    dag_id = str(getattr(context.get("dag"), "dag_id", ""))
    try:
        channels = channels_for(dag_id)
    except ValueError as error:
        log.error("failure notifications of %s are misconfigured: %s", dag_id, error)
        return
    if not channels:
        log.debug("no failure notification configured for %s", dag_id)
        return
    message = _describe(context)
    for channel, conn_id, build in _notifiers(channels):
        try:
            build(channels, message).notify(context)  # notify(), not __call__: nothing rendered as Jinja
        except Exception as error:
            log.error(
                "failure notification of %s by %s via %r failed: %s",
                dag_id,
                channel,
                conn_id,
                redact(f"{type(error).__name__}: {error}", conn_id),
            )
        else:
            log.info("failure of %s run %s notified by %s", dag_id, message.run_id, channel)
