"""Which reports exist and where each one goes: ``config/reports.yaml``, validated.

The file is versioned with the code (its header documents the format); a deployment points
``IMAGELABELS_REPORTS_CONFIG`` at its own copy. The report DAG file reads it at parse time, so
a mistake must be reported loudly, precisely and completely, and must cost only the entry it is
in: :func:`read_report_configs` returns the valid reports (each becomes a DAG) and one sentence
per mistake, each naming the report (``reports[1] 'weekly'``) and the field
(``delivery.email.to``). Unknown fields are errors because a typo such as
``delivery: {emial: ...}`` would otherwise silently deliver nothing.

Validation is a JSON Schema (:data:`REPORT_SCHEMA`, checked with ``jsonschema``) plus the few
checks a schema cannot express (cron syntax, ``{placeholders}``, attachments among the rendered
formats, recipients of an enabled email, unique names). Why jsonschema and not pydantic (which
Airflow also ships): the alert rules already use it, so both configuration files speak one
error vocabulary (entry + field path + an ``x-expected`` phrase + a short value, shown under
:func:`~imagelabels.alerts.rules.shown_value`'s rules so a pasted secret is never echoed);
``iter_errors`` yields every violation of an entry with its exact path in one pass; the schema
is plain data an editor can use; and the frozen dataclasses below stay plain values. Pydantic
would either coerce (lax mode turns ``"15"`` into 15 and ``true`` into 1) or refuse a YAML
list for a tuple (strict mode), and its default messages repeat the input.

Why this module is long: the report file's schema and validation (every mistake reported with its
path, a broken report losing only its DAG) are one contract with ``config/reports.yaml``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagelabels.settings import environment_value

PERIODS = ("hourly", "daily", "weekly", "monthly")
FORMATS = ("csv", "xlsx", "png", "pdf", "json")
CHANNELS = ("email", "slack", "webhook")
CONFIG_VERSION = 1
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[3] / "config" / "reports.yaml"
DEFAULT_OUTPUT_URI = "s3://{bucket}/_imagelabels/reports/"  # below the prefix ingestion never lists
DEFAULT_SUBJECT = "Label report {name} {interval}"
DEFAULT_ATTACHMENTS = ("pdf", "xlsx", "png")
SUBJECT_FIELDS = ("name", "period", "interval")
_EMAIL = r"^\s*[^@\s,;<>]+@[^@\s,;<>]+\s*$"
ERRORS_DAG_ID = "image_label_report_config_errors"  # lists this file's mistakes while it has any
RESERVED_NAMES = ("config_errors",)  # image_label_report_<name> would be ERRORS_DAG_ID
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
    override = environment_value("IMAGELABELS_REPORTS_CONFIG").strip()
    return Path(override) if override else DEFAULT_CONFIG_PATH


# --- the schema --------------------------------------------------------------------------------
#
# ``x-expected`` is what a message says a field must be: a phrase, or a mapping from a JSON
# Schema keyword to a phrase ("*" for the others). Nullable fields are optional ones a file may
# spell ``null`` (the header of config/reports.yaml does).


def _text(*, nullable: bool = True) -> dict[str, Any]:
    return {
        "type": ["string", "null"] if nullable else "string",
        "pattern": r"\S",
        "x-expected": "must be a non-empty string",
    }


def _integer(low: int, high: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": low,
        "maximum": high,
        "x-expected": f"must be an integer within {low}..{high}",
    }


def _choices(allowed: Sequence[str]) -> dict[str, Any]:
    listed = ", ".join(allowed)
    return {
        "type": ["array", "null"],
        "minItems": 1,
        "uniqueItems": True,
        "items": {"enum": list(allowed), "x-expected": f"entries must be among {listed}"},
        "x-expected": {"uniqueItems": "lists an entry twice", "*": f"must be a non-empty list of {listed}"},
    }


_BOOLEAN = {"type": "boolean", "x-expected": "must be true or false"}
_ADDRESSES = {
    "type": ["array", "string", "null"],
    "pattern": _EMAIL,
    "items": {"type": "string", "pattern": _EMAIL, "x-expected": "entries must be email addresses"},
    "x-expected": {"pattern": "entries must be email addresses", "*": "must be a list of email addresses"},
}


def _mapping(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": properties,
        "x-expected": "must be a mapping",
    }


REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "period"],
    "x-expected": "must be a mapping",
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9_-]+$",
            "x-expected": "is required and must match [a-z0-9_-]+",
        },
        "period": {"enum": list(PERIODS), "x-expected": f"must be one of {', '.join(PERIODS)}"},
        "schedule": _text(),
        "top_n": _integer(1, 1000),
        "prefix_depth": _integer(0, 32),
        "bucket": _text(),
        "prefix": _text(),
        "formats": _choices(FORMATS),
        "output": _mapping({"uri": _text()}),
        "delivery": _mapping(
            {
                "email": _mapping(
                    {
                        "conn_id": _text(),
                        "to": _ADDRESSES,
                        "cc": _ADDRESSES,
                        "subject": _text(),
                        "attachments": _choices(FORMATS),
                        "enabled": _BOOLEAN,
                    }
                ),
                "slack": _mapping({"conn_id": _text(), "enabled": _BOOLEAN}),
                "webhook": _mapping(
                    {
                        "conn_id": _text(),
                        "endpoint": {
                            "type": "string",
                            "pattern": r"^\S*$",
                            "x-expected": "must be a URL path without spaces",
                        },
                        "enabled": _BOOLEAN,
                    }
                ),
                "attempts": _integer(1, 10),
            }
        ),
    },
}
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "reports"],
    "properties": {
        "version": {"const": CONFIG_VERSION, "x-expected": f"must be {CONFIG_VERSION}"},
        "reports": {"type": "array", "minItems": 1, "x-expected": "must be a non-empty list"},
    },
}


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportConfigs:
    """A report config as read: the valid reports, one sentence per mistake, and the refused
    entries (``reports[1] 'weekly'``), which get no DAG until they are fixed."""

    reports: list[ReportConfig]
    problems: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    source: str = "<report config>"

    def problems_text(self) -> str:
        """Every problem on its own line, each prefixed with the file."""
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


def read_report_configs(path: Path | None = None) -> ReportConfigs:
    """Read the report config and keep what is valid (see :func:`check_report_configs`); a file
    that cannot be read or parsed gives no report and one problem."""
    import yaml

    source = config_path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        return ReportConfigs([], [f"cannot read the report config: {reason}"], source=str(source))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return ReportConfigs([], [f"not valid YAML{where}"], source=str(source))
    checked = check_report_configs(data)
    return ReportConfigs(checked.reports, checked.problems, checked.invalid, source=str(source))


def load_report_configs(path: Path | None = None) -> list[ReportConfig]:
    """Every report of the config, or :class:`ReportConfigError` listing every mistake (one per
    line, each prefixed with the file)."""
    configs = read_report_configs(path)
    if configs.problems:
        raise ReportConfigError(configs.problems_text())
    return configs.reports


def get_report_config(name: str, path: Path | None = None) -> ReportConfig:
    """The report called ``name`` (a task looks its report up at run time); a mistake in
    another report does not stop this one, a mistake in this one names itself."""
    configs = read_report_configs(path)
    for config in configs.reports:
        if config.name == name:
            return config
    own = [p for p in configs.problems if p.startswith("reports[") and f" {name!r}:" in p]
    if own:
        listed = "\n".join(f"{configs.source}: {problem}" for problem in own)
        raise ReportConfigError(f"report {name!r} is invalid:\n{listed}")
    defined = ", ".join(c.name for c in configs.reports) or "none"
    raise ReportConfigError(f"no report named {name!r}; defined: {defined}")


def parse_report_configs(data: Any) -> list[ReportConfig]:
    """Validate already-parsed YAML (a mapping with ``version`` and ``reports``); every mistake
    is listed in one :class:`ReportConfigError`."""
    checked = check_report_configs(data)
    if checked.problems:
        raise ReportConfigError("\n".join(checked.problems))
    return checked.reports


def check_report_configs(data: Any) -> ReportConfigs:
    """Validate already-parsed YAML entry by entry: the valid reports, and every problem.

    A file whose ``version`` or ``reports`` cannot be used gives no report; otherwise each entry
    stands alone (its mistakes refuse it, not the others), and an unknown top-level field is a
    problem that refuses nothing.
    """
    from jsonschema import Draft202012Validator

    if not isinstance(data, Mapping):
        problem = f"the config must be a mapping with 'version' and 'reports' (got {_kind(data)})"
        return ReportConfigs([], [problem])
    problems: list[str] = []
    usable = True
    for error in sorted(Draft202012Validator(FILE_SCHEMA).iter_errors(data), key=_path_key):
        if error.validator == "additionalProperties":
            problems.append(_unknown(error, "", ""))
            continue
        usable = False
        if error.validator == "required":
            names = [key for key in error.validator_value if key not in data]
        else:
            names = [str(error.absolute_path[0])]
        for name in names:
            value = data.get(name)
            got = shown_value(value) if name == "version" else _kind(value)
            problem = f"field {name!r} {FILE_SCHEMA['properties'][name]['x-expected']} (got {got})"
            if problem not in problems:
                problems.append(problem)
    if not usable:
        return ReportConfigs([], problems)
    reports, entry_problems, invalid = _check_reports(data["reports"])
    return ReportConfigs(reports, problems + entry_problems, invalid)


def _check_reports(raws: list[Any]) -> tuple[list[ReportConfig], list[str], list[str]]:
    """Each entry on its own: the valid reports, every problem, the refused entries."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(REPORT_SCHEMA)
    reports: list[ReportConfig] = []
    problems: list[str] = []
    invalid: list[str] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raws):
        where = _where(index, raw)
        if not isinstance(raw, Mapping):
            own = [f"{where}: must be a mapping (got {_kind(raw)})"]
        else:
            errors = sorted(validator.iter_errors(raw), key=_path_key)
            own = list(dict.fromkeys(_describe(error, where) for error in errors))
            own += [f"{where}: {problem}" for problem in _semantic_problems(raw)]
            name = raw.get("name")
            if name in RESERVED_NAMES:
                own.append(
                    f"{where}: field 'name' is reserved ({ERRORS_DAG_ID} lists the mistakes of this file)"
                )
            elif isinstance(name, str):
                if name in seen:
                    own.append(f"{where}: field 'name' duplicates reports[{seen[name]}]")
                else:
                    seen[name] = index
        if own:
            problems.extend(own)
            invalid.append(where)
        else:
            reports.append(_build(raw))
    return reports, problems, invalid


def problems_doc(configs: ReportConfigs) -> str:
    """The Markdown page of the ``image_label_report_config_errors`` DAG: which entries got no
    DAG and every mistake, in a code block (the messages quote what the file says, which is
    data: no Markdown of it is rendered)."""
    listed = "\n".join(configs.problems)
    longest = max((len(run) for run in re.findall(r"`+", listed)), default=0)
    fence = "`" * max(3, longest + 1)
    refused = ", ".join(configs.invalid) if configs.invalid else "none (the mistakes are outside the entries)"
    return (
        "### The report config has mistakes\n\n"
        f"`{configs.source}` has the mistakes below. The refused entries get **no report DAG** "
        "until they are fixed; the other reports run as usual. This DAG exists only while the "
        "file has mistakes: each run fails and lists them again, read afresh.\n\n"
        f"Refused entries: {refused}\n\n"
        f"{fence}text\n{listed}\n{fence}\n"
    )


# --- messages ----------------------------------------------------------------------------------


def shown_value(value: Any) -> str:
    """The alert rules' rule for repeating a value in a message (short, one line, not a token)."""
    from imagelabels.alerts.rules import shown_value as shown

    return shown(value)


def _where(index: int, raw: Any) -> str:
    """``reports[1] 'weekly'`` (the name only when a message may show it), else ``reports[1]``."""
    name = raw.get("name") if isinstance(raw, Mapping) else None
    shown = shown_value(name) if isinstance(name, str) and name else ""
    return f"reports[{index}] {shown}" if shown.startswith("'") else f"reports[{index}]"


def _path_key(error: Any) -> list[str]:
    return [str(part) for part in error.absolute_path]


def _dotted(parts: Sequence[Any]) -> str:
    return ".".join(str(part) for part in parts)


def _phrase(schema: Any, validator: str) -> str | None:
    expected = schema.get("x-expected") if isinstance(schema, Mapping) else None
    if isinstance(expected, Mapping):
        found = expected.get(validator, expected.get("*"))
        return str(found) if found is not None else None
    return str(expected) if expected is not None else None


def _unknown(error: Any, where: str, prefix: str) -> str:
    """``unknown field(s) 'delivery.emial' (allowed: email, slack, webhook, attempts)``."""
    from imagelabels.alerts.rules import shown_key

    allowed = list(error.schema.get("properties", {}))
    unknown = sorted(str(key) for key in error.instance if key not in allowed)
    names = ", ".join(shown_key(prefix + key) for key in unknown)
    lead = f"{where}: " if where else ""
    return f"{lead}unknown field(s) {names} (allowed: {', '.join(allowed)})"


def _describe(error: Any, where: str) -> str:
    """One schema error of a report entry as a sentence naming the entry and the field."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        prefix = f"{_dotted(path)}." if path else ""
        return _unknown(error, where, prefix)
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        phrase = _phrase(error.schema["properties"][missing], "required") or "is required"
        return f"{where}: field {_dotted([*path, missing])!r} {phrase} (got None)"
    if path and isinstance(path[-1], int):  # an entry of a list: name the list
        path = path[:-1]
    phrase = _phrase(error.schema, str(error.validator)) or f"breaks the schema's {error.validator!r} rule"
    if not path:
        return f"{where}: {phrase} (got {_kind(error.instance)})"
    return f"{where}: field {_dotted(path)!r} {phrase} (got {shown_value(error.instance)})"


def _semantic_problems(raw: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say, checked on fields of the right type (the schema reports the
    others): cron syntax, placeholders, the output location, attachments among the rendered
    formats, recipients of an enabled email."""
    problems: list[str] = []
    schedule = raw.get("schedule")
    if isinstance(schedule, str) and schedule.strip() and not _valid_cron(schedule.strip()):
        problems.append(
            f"field 'schedule' must be a 5-field cron expression or an @preset (got {shown_value(schedule)})"
        )
    output = raw.get("output")
    uri = output.get("uri") if isinstance(output, Mapping) else None
    if isinstance(uri, str) and uri.strip():
        problems.extend(_uri_problems(uri.strip()))
    delivery = raw.get("delivery")
    email = delivery.get("email") if isinstance(delivery, Mapping) else None
    if isinstance(email, Mapping):
        problems.extend(_email_problems(email, raw.get("formats")))
    return problems


def _uri_problems(uri: str) -> list[str]:
    placeholders = _placeholders(uri)
    if placeholders is None or not placeholders <= {"bucket"}:
        return [f"field 'output.uri' may only use the placeholder {{bucket}} (got {shown_value(uri)})"]
    if uri.startswith("s3://") and not uri.removeprefix("s3://").split("/", 1)[0]:
        return [f"field 'output.uri' names no bucket (got {shown_value(uri)})"]
    if not uri.startswith("s3://") and "://" in uri:
        return [
            f"field 'output.uri' must be s3://bucket/prefix or a local directory (got {shown_value(uri)})"
        ]
    return []


def _email_problems(email: Mapping[str, Any], formats: Any) -> list[str]:
    problems: list[str] = []
    subject = email.get("subject")
    if isinstance(subject, str):
        placeholders = _placeholders(subject)
        if placeholders is None or not placeholders <= set(SUBJECT_FIELDS):
            problems.append(
                "field 'delivery.email.subject' may only use {name}, {period}, {interval} "
                f"(got {shown_value(subject)})"
            )
    if email.get("enabled", True) is not False and email.get("to") in (None, [], ""):
        problems.append("field 'delivery.email.to' needs at least one address")
    rendered = formats if formats is not None else list(FORMATS)
    attachments = email.get("attachments")
    if isinstance(attachments, list) and isinstance(rendered, list):
        missing = [str(a) for a in attachments if a in FORMATS and a not in rendered]
        if missing:
            problems.append(
                "field 'delivery.email.attachments' names formats the report does not render: "
                + ", ".join(missing)
            )
    return problems


# --- building (the entry is valid) ---------------------------------------------------------------


def _stripped(value: Any, default: str) -> str:
    return value.strip() if isinstance(value, str) else default


def _addresses(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    return tuple(item.strip() for item in items)


def _build(raw: Mapping[str, Any]) -> ReportConfig:
    """The :class:`ReportConfig` of a valid entry, defaults filled in."""
    formats = tuple(raw.get("formats") or FORMATS)
    output = raw.get("output") or {}
    delivery = raw.get("delivery") or {}
    email, slack, webhook = (delivery.get(name) for name in CHANNELS)
    schedule = raw.get("schedule")
    return ReportConfig(
        name=raw["name"],
        period=raw["period"],
        schedule=schedule.strip() if isinstance(schedule, str) else None,
        top_n=int(raw.get("top_n", 15)),
        prefix_depth=int(raw.get("prefix_depth", 1)),
        bucket=_stripped(raw.get("bucket"), "") or None,
        prefix=_stripped(raw.get("prefix"), "") or None,
        formats=formats,
        output=OutputConfig(_stripped(output.get("uri"), DEFAULT_OUTPUT_URI)),
        delivery=DeliveryConfig(
            email=None if email is None else _build_email(email, formats),
            slack=None
            if slack is None
            else SlackDelivery(
                conn_id=_stripped(slack.get("conn_id"), "slack_webhook_default"),
                enabled=slack.get("enabled", True),
            ),
            webhook=None
            if webhook is None
            else WebhookDelivery(
                conn_id=_stripped(webhook.get("conn_id"), "imagelabels_webhook"),
                endpoint=webhook.get("endpoint", ""),
                enabled=webhook.get("enabled", True),
            ),
            attempts=int(delivery.get("attempts", 3)),
        ),
    )


def _build_email(email: Mapping[str, Any], formats: tuple[str, ...]) -> EmailDelivery:
    attachments = email.get("attachments")
    default = tuple(f for f in DEFAULT_ATTACHMENTS if f in formats)
    return EmailDelivery(
        to=_addresses(email.get("to")),
        conn_id=_stripped(email.get("conn_id"), "smtp_default"),
        cc=_addresses(email.get("cc")),
        subject=_stripped(email.get("subject"), DEFAULT_SUBJECT),
        attachments=tuple(attachments) if attachments else default,
        enabled=email.get("enabled", True),
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
