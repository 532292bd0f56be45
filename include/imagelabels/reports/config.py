"""Which reports exist and where each one goes: ``config/reports.yaml``, validated.

The file is versioned with the code (its header documents the format); a deployment points
``IMAGELABELS_REPORTS_CONFIG`` at its own copy. The report DAG file reads it at parse time, so a
mistake must fail loudly and precisely: every error names the report (``reports[1] 'weekly'``)
and the field (``delivery.email.to``), and unknown fields are errors because a typo such as
``delivery: {emial: ...}`` would otherwise silently deliver nothing.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERIODS = ("hourly", "daily", "weekly", "monthly")
FORMATS = ("csv", "xlsx", "png", "pdf", "json")
CHANNELS = ("email", "slack", "webhook")
CONFIG_VERSION = 1
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[3] / "config" / "reports.yaml"
DEFAULT_OUTPUT_URI = "s3://{bucket}/_imagelabels/reports/"  # below the prefix ingestion never lists
DEFAULT_SUBJECT = "Label report {name} {interval}"
DEFAULT_ATTACHMENTS = ("pdf", "xlsx", "png")
SUBJECT_FIELDS = ("name", "period", "interval")
_NAME = re.compile(r"[a-z0-9_-]+")
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")
_CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")


class ReportConfigError(ValueError):
    """The report config is invalid; the message names the report and the field."""


@dataclass(frozen=True)
class EmailDelivery:
    """Mail the summary with ``attachments`` (rendered formats) to ``to`` and ``cc``.

    ``subject`` may use ``{name}``, ``{period}`` and ``{interval}``."""

    to: tuple[str, ...]
    conn_id: str = "smtp_default"
    cc: tuple[str, ...] = ()
    subject: str = DEFAULT_SUBJECT
    attachments: tuple[str, ...] = DEFAULT_ATTACHMENTS
    enabled: bool = True


@dataclass(frozen=True)
class SlackDelivery:
    """Post the summary and links through the Slack incoming-webhook connection ``conn_id``."""

    conn_id: str = "slack_webhook_default"
    enabled: bool = True


@dataclass(frozen=True)
class WebhookDelivery:
    """POST the JSON summary to the HTTP connection ``conn_id`` + ``endpoint``."""

    conn_id: str = "imagelabels_webhook"
    endpoint: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class DeliveryConfig:
    """The report's channels besides storage (each optional); ``attempts`` per channel."""

    email: EmailDelivery | None = None
    slack: SlackDelivery | None = None
    webhook: WebhookDelivery | None = None
    attempts: int = 3

    def enabled_channels(self) -> list[str]:
        """Names of the configured channels not marked ``enabled: false``, in a fixed order."""
        return [name for name in CHANNELS if (c := getattr(self, name)) is not None and c.enabled]


@dataclass(frozen=True)
class OutputConfig:
    """Where rendered files are stored: ``s3://...`` (``{bucket}`` = the source bucket) or a
    local directory."""

    uri: str = DEFAULT_OUTPUT_URI

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


@dataclass(frozen=True)
class ReportConfig:
    """One scheduled report."""

    name: str
    period: str
    schedule: str | None = None
    top_n: int = 15
    prefix_depth: int = 1
    bucket: str | None = None
    prefix: str | None = None
    formats: tuple[str, ...] = FORMATS
    output: OutputConfig = field(default_factory=OutputConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)


def config_path(path: Path | None = None) -> Path:
    """``path``, else ``IMAGELABELS_REPORTS_CONFIG``, else the repository's ``config/reports.yaml``."""
    if path is not None:
        return Path(path)
    override = os.environ.get("IMAGELABELS_REPORTS_CONFIG", "").strip()
    return Path(override) if override else DEFAULT_CONFIG_PATH


def load_report_configs(path: Path | None = None) -> list[ReportConfig]:
    """Read and validate the report config; raise :class:`ReportConfigError` on any mistake."""
    import yaml

    source = config_path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ReportConfigError(f"{source}: cannot read the report config: {error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReportConfigError(f"{source}: not valid YAML: {error}") from error
    try:
        return parse_report_configs(data)
    except ReportConfigError as error:
        raise ReportConfigError(f"{source}: {error}") from None


def get_report_config(name: str, path: Path | None = None) -> ReportConfig:
    """The report called ``name`` (a task looks its report up at run time)."""
    configs = load_report_configs(path)
    for config in configs:
        if config.name == name:
            return config
    raise ReportConfigError(f"no report named {name!r}; defined: {', '.join(c.name for c in configs)}")


def parse_report_configs(data: Any) -> list[ReportConfig]:
    """Validate already-parsed YAML (a mapping with ``version`` and ``reports``)."""
    if not isinstance(data, Mapping):
        raise ReportConfigError(
            f"the config must be a mapping with 'version' and 'reports' (got {_kind(data)})"
        )
    _no_unknown(data, ("version", "reports"), "")
    if data.get("version") != CONFIG_VERSION:
        raise ReportConfigError(f"field 'version' must be {CONFIG_VERSION} (got {data.get('version')!r})")
    reports = data.get("reports")
    if not isinstance(reports, list) or not reports:
        raise ReportConfigError(f"field 'reports' must be a non-empty list (got {_kind(reports)})")
    configs: list[ReportConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(reports):
        config = _parse_report(index, raw)
        if config.name in seen:
            raise ReportConfigError(
                f"reports[{index}] {config.name!r}: field 'name' duplicates reports[{seen[config.name]}]"
            )
        seen[config.name] = index
        configs.append(config)
    return configs


class _Fields:
    """Reads the fields of one mapping, naming the report and the dotted field in errors."""

    def __init__(self, where: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.where = where
        self.raw = raw
        self.prefix = prefix

    def error(self, name: str, message: str) -> ReportConfigError:
        return ReportConfigError(f"{self.where}: field '{self.prefix}{name}' {message}")

    def child(self, name: str, allowed: tuple[str, ...]) -> _Fields | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, f"must be a mapping (got {_kind(value)})")
        prefix = f"{self.prefix}{name}."
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise ReportConfigError(
                f"{self.where}: unknown field(s) {', '.join(repr(prefix + k) for k in unknown)}"
                f" (allowed: {', '.join(allowed)})"
            )
        return _Fields(self.where, value, prefix)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self.error(name, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"must be a non-empty string (got {value!r})")
        return value.strip()

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"must be an integer within {low}..{high} (got {value!r})")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false (got {value!r})")
        return value

    def choices(self, name: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw.get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not value:
            raise self.error(name, f"must be a non-empty list of {', '.join(allowed)} (got {value!r})")
        for item in value:
            if item not in allowed:
                raise self.error(name, f"entries must be among {', '.join(allowed)} (got {item!r})")
        if len(set(value)) != len(value):
            raise self.error(name, f"lists an entry twice (got {value!r})")
        return tuple(value)

    def addresses(self, name: str, *, required: bool) -> tuple[str, ...]:
        value = self.raw.get(name)
        if value is None or value == []:
            if required:
                raise self.error(name, "needs at least one address")
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(name, f"must be a list of email addresses (got {_kind(value)})")
        for item in value:
            if not isinstance(item, str) or not _EMAIL.fullmatch(item.strip()):
                raise self.error(name, f"entries must be email addresses (got {item!r})")
        return tuple(item.strip() for item in value)


_REPORT_FIELDS = (
    "name",
    "period",
    "schedule",
    "top_n",
    "prefix_depth",
    "bucket",
    "prefix",
    "formats",
    "output",
    "delivery",
)


def _parse_report(index: int, raw: Any) -> ReportConfig:
    where = f"reports[{index}]"
    if not isinstance(raw, Mapping):
        raise ReportConfigError(f"{where}: must be a mapping (got {_kind(raw)})")
    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"{where} {name!r}"
    _no_unknown(raw, _REPORT_FIELDS, where)
    fields = _Fields(where, raw)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fields.error("name", f"is required and must match [a-z0-9_-]+ (got {name!r})")
    period = raw.get("period")
    if period not in PERIODS:
        raise fields.error("period", f"must be one of {', '.join(PERIODS)} (got {period!r})")
    schedule = fields.string("schedule")
    if schedule is not None and not _valid_cron(schedule):
        raise fields.error("schedule", f"must be a 5-field cron expression or an @preset (got {schedule!r})")
    formats = fields.choices("formats", FORMATS, FORMATS)
    return ReportConfig(
        name=name,
        period=str(period),
        schedule=schedule,
        top_n=fields.integer("top_n", 15, 1, 1000),
        prefix_depth=fields.integer("prefix_depth", 1, 0, 32),
        bucket=fields.string("bucket"),
        prefix=fields.string("prefix"),
        formats=formats,
        output=_parse_output(fields),
        delivery=_parse_delivery(fields, formats),
    )


def _parse_output(fields: _Fields) -> OutputConfig:
    output = fields.child("output", ("uri",))
    if output is None:
        return OutputConfig()
    uri = output.string("uri", DEFAULT_OUTPUT_URI)
    assert uri is not None
    placeholders = _placeholders(uri)
    if placeholders is None or not placeholders <= {"bucket"}:
        raise output.error("uri", f"may only use the placeholder {{bucket}} (got {uri!r})")
    if uri.startswith("s3://"):
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise output.error("uri", f"names no bucket (got {uri!r})")
    elif "://" in uri:
        raise output.error("uri", f"must be s3://bucket/prefix or a local directory (got {uri!r})")
    return OutputConfig(uri)


def _parse_delivery(fields: _Fields, formats: tuple[str, ...]) -> DeliveryConfig:
    delivery = fields.child("delivery", (*CHANNELS, "attempts"))
    if delivery is None:
        return DeliveryConfig()
    email = delivery.child("email", ("conn_id", "to", "cc", "subject", "attachments", "enabled"))
    slack = delivery.child("slack", ("conn_id", "enabled"))
    webhook = delivery.child("webhook", ("conn_id", "endpoint", "enabled"))
    return DeliveryConfig(
        email=_parse_email(email, formats) if email else None,
        slack=(
            SlackDelivery(
                conn_id=slack.string("conn_id", "slack_webhook_default") or "",
                enabled=slack.boolean("enabled", True),
            )
            if slack
            else None
        ),
        webhook=(
            WebhookDelivery(
                conn_id=webhook.string("conn_id", "imagelabels_webhook") or "",
                endpoint=_endpoint(webhook),
                enabled=webhook.boolean("enabled", True),
            )
            if webhook
            else None
        ),
        attempts=delivery.integer("attempts", 3, 1, 10),
    )


def _parse_email(email: _Fields, formats: tuple[str, ...]) -> EmailDelivery:
    enabled = email.boolean("enabled", True)
    subject = email.string("subject", DEFAULT_SUBJECT) or DEFAULT_SUBJECT
    placeholders = _placeholders(subject)
    if placeholders is None or not placeholders <= set(SUBJECT_FIELDS):
        raise email.error("subject", f"may only use {{name}}, {{period}}, {{interval}} (got {subject!r})")
    attachments = email.choices("attachments", FORMATS, tuple(f for f in DEFAULT_ATTACHMENTS if f in formats))
    missing = [a for a in attachments if a not in formats]
    if missing:
        raise email.error("attachments", f"names formats the report does not render: {', '.join(missing)}")
    return EmailDelivery(
        to=email.addresses("to", required=enabled),
        conn_id=email.string("conn_id", "smtp_default") or "",
        cc=email.addresses("cc", required=False),
        subject=subject,
        attachments=attachments,
        enabled=enabled,
    )


def _endpoint(webhook: _Fields) -> str:
    value = webhook.raw.get("endpoint", "")
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise webhook.error("endpoint", f"must be a URL path without spaces (got {value!r})")
    return value


def _no_unknown(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        lead = f"{where}: " if where else ""
        raise ReportConfigError(
            f"{lead}unknown field(s) {', '.join(repr(k) for k in unknown)} (allowed: {', '.join(allowed)})"
        )


def _placeholders(template: str) -> set[str] | None:
    """Names of the ``{...}`` fields of a format string, or ``None`` when it is malformed."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return None


def _valid_cron(expression: str) -> bool:
    if expression in _CRON_PRESETS:
        return True
    if len(expression.split()) != 5:
        return False
    from croniter import croniter

    return bool(croniter.is_valid(expression))


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
