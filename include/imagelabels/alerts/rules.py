"""Alert rules: the versioned YAML file, its JSON Schema and the checks a schema cannot express.

The file (``config/alert_rules.yaml``, or ``IMAGELABELS_ALERT_RULES``) is edited by people who are
not reading this code, so every error names the rule (its 1-based position and its name) and the
field, and says what the field must be::

    alert rule #2 'weapon-detected': field 'min_confidence' must be a number between 0 and 100 (got 'high')

The JSON Schema (``config/alert_rules.schema.json``) is the single description of the format
(editors can use it too); each of its properties carries an ``x-expected`` phrase that these
messages quote. What a schema says badly is checked here: which fields each rule type may use,
unique names, and that a channel a rule uses is configured well enough to send.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RULES_PATH = ROOT / "config" / "alert_rules.yaml"
SCHEMA_PATH = ROOT / "config" / "alert_rules.schema.json"
RULES_ENV = "IMAGELABELS_ALERT_RULES"

RULE_TYPES = ("label", "moderation", "label_count", "no_ingestion")
CHANNELS = ("email", "slack", "webhook", "log")
SEVERITIES = ("info", "warning", "critical")

# Airflow connection ids a channel uses when the file's ``channels:`` mapping does not name one.
DEFAULT_CONN_IDS = {
    "email": "smtp_default",
    "slack": "slack_webhook_default",
    "webhook": "imagelabels_webhook",
}

_COMMON_FIELDS = frozenset(
    {"name", "type", "description", "enabled", "severity", "throttle", "channels", "bucket", "prefix"}
)
_TYPE_FIELDS: dict[str, frozenset[str]] = {
    "label": frozenset({"label", "min_confidence"}),
    "moderation": frozenset({"categories", "min_confidence"}),
    "label_count": frozenset({"label", "window", "threshold", "min_confidence"}),
    "no_ingestion": frozenset({"hours"}),
}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class RuleError(ValueError):
    """The rules file cannot be used; the message says where and why."""


def parse_duration(value: str | int) -> timedelta:
    """``30s``/``15m``/``1h``/``2d`` (or ``0``) as a timedelta: one short notation for throttles
    and windows, so nobody has to guess whether a bare number means seconds or minutes."""
    if value == 0 or value == "0":
        return timedelta(0)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a duration such as 30s, 15m, 1h or 2d: {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every rule has: identity, scope (bucket and key prefix), routing and throttle."""

    name: str
    severity: str = "warning"
    enabled: bool = True
    throttle: timedelta = timedelta(minutes=15)
    channels: tuple[str, ...] = ("log",)
    bucket: str | None = None
    prefix: str | None = None
    description: str = ""

    @property
    def type(self) -> str:
        """The ``type:`` of the rule in the file."""
        raise NotImplementedError

    @property
    def per_image(self) -> bool:
        """True when the rule fires once per matching image (label, moderation), False when it
        fires once per time window (label_count, no_ingestion)."""
        return False


@dataclass(frozen=True, kw_only=True)
class LabelRule(Rule):
    """Fires for an image with a label named ``label`` (exact, case-insensitive) detected at or
    above ``min_confidence`` - both in the same label object."""

    label: str
    min_confidence: float

    @property
    def type(self) -> str:
        return "label"

    @property
    def per_image(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class ModerationRule(Rule):
    """Fires for an image with a moderation label at or above ``min_confidence`` whose name or
    parent is one of ``categories`` (any moderation label when ``categories`` is empty)."""

    min_confidence: float
    categories: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return "moderation"

    @property
    def per_image(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class LabelCountRule(Rule):
    """Fires when more than ``threshold`` images ingested in the last ``window`` carry ``label``
    (at or above ``min_confidence`` when given)."""

    label: str
    window: timedelta
    threshold: int
    min_confidence: float | None = None

    @property
    def type(self) -> str:
        return "label_count"


@dataclass(frozen=True, kw_only=True)
class NoIngestionRule(Rule):
    """Fires when nothing (in scope) was ingested for ``hours``: the pipeline health check."""

    hours: float

    @property
    def type(self) -> str:
        return "no_ingestion"


@dataclass(frozen=True)
class AlertConfig:
    """A loaded rules file: the rules and the channel settings (``channels:``) they send with."""

    rules: list[Rule]
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None


def rules_path(path: Path | None = None) -> Path:
    """The rules file: ``path``, else ``IMAGELABELS_ALERT_RULES``, else ``config/alert_rules.yaml``."""
    if path is not None:
        return Path(path)
    configured = os.environ.get(RULES_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_RULES_PATH


def load_rules(path: Path | None = None) -> list[Rule]:
    """The rules of the rules file (see :func:`load_config`)."""
    return load_config(path).rules


def load_config(path: Path | None = None) -> AlertConfig:
    """Read, validate and convert the rules file; :class:`RuleError` names what is wrong."""
    source = rules_path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise RuleError(f"cannot read alert rules file {source}: {error.strerror or error}") from error
    return parse_config(text, source=str(source))


def parse_config(text: str, *, source: str = "<alert rules>") -> AlertConfig:
    """Validate the YAML ``text`` of a rules file and build the rules."""
    data = _parse_yaml(text, source)
    problems = schema_problems(data)
    if not problems:
        problems = semantic_problems(data)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise RuleError(f"invalid alert rules file {source}:\n{listed}")
    return _build(data, Path(source) if not source.startswith("<") else None)


def _parse_yaml(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise RuleError(f"alert rules file {source}{where}: YAML syntax error: {problem}") from error
    except yaml.YAMLError as error:
        raise RuleError(f"alert rules file {source}: YAML syntax error: {error}") from error


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the rules file."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _where(data: Any, path: Sequence[Any]) -> str:
    """``alert rule #2 'name'`` for a path inside ``rules``, else ``top level``."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        index = path[1]
        rules = data.get("rules") if isinstance(data, dict) else None
        rule = rules[index] if isinstance(rules, list) and index < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        label = f"alert rule #{index + 1}"
        return f"{label} {name!r}" if isinstance(name, str) and name else label
    return "top level"


def _field(path: Sequence[Any]) -> tuple[str, int | None]:
    """The field a schema error is about (relative to its rule or section) and, for an item of a
    list, its 1-based position."""
    in_rule = len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int)
    rest = list(path[2:]) if in_rule else list(path[1:])
    if not rest and path and not in_rule:
        rest = [path[0]]
    item = None
    if rest and isinstance(rest[-1], int):
        item = rest.pop() + 1
    return ".".join(str(part) for part in rest), item


def _describe(error: Any, data: Any) -> str:
    """One schema error as a sentence naming the rule and the field."""
    path = list(error.absolute_path)
    where = _where(data, path)
    name, item = _field(path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(str(key) for key in error.instance if key not in allowed)
        noun = "field" if len(unknown) == 1 else "fields"
        scope = f" in {name!r}" if name else ""
        return f"{where}: unknown {noun} {', '.join(repr(key) for key in unknown)}{scope}"
    if error.validator == "required":
        missing = [
            f"{name}.{key}" if name else str(key)
            for key in error.validator_value
            if key not in error.instance
        ]
        rule_type = error.instance.get("type") if isinstance(error.instance, dict) else None
        suffix = f" for a {rule_type!r} rule" if path[:1] == ["rules"] and rule_type in RULE_TYPES else ""
        if len(missing) == 1:
            return f"{where}: field {missing[0]!r} is required{suffix}"
        listed = ", ".join(repr(key) for key in missing[:-1]) + f" and {missing[-1]!r}"
        return f"{where}: fields {listed} are required{suffix}"
    subject = f"field {name!r}" if name else ("the rule" if path else "the file")
    if item is not None:
        subject += f" item #{item}"
    if error.validator == "uniqueItems":
        return f"{where}: {subject} lists a value twice (got {error.instance!r})"
    expected = error.schema.get("x-expected") if isinstance(error.schema, dict) else None
    if expected:
        return f"{where}: {subject} must be {expected} (got {error.instance!r})"
    return f"{where}: {subject}: {error.message}"


def schema_problems(data: Any) -> list[str]:
    """Every schema violation of ``data`` as a sentence, in file order."""
    from jsonschema import Draft202012Validator

    if data is None:
        return ["the file is empty (expected a mapping with 'version' and 'rules')"]
    validator = Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(part) for part in e.absolute_path])
    problems: list[str] = []
    for error in errors:
        # a bad 'type' makes every if/then pointless: report the type, not its consequences
        sentence = _describe(error, data)
        if sentence not in problems:
            problems.append(sentence)
    return problems


def semantic_problems(data: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say: fields a rule type does not use, duplicate names, channels that
    are used but cannot send (email without recipients)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    defaults = data.get("defaults") or {}
    settings = data.get("channels") or {}
    for index, rule in enumerate(data.get("rules") or []):
        where = _where(data, ["rules", index])
        allowed = _COMMON_FIELDS | _TYPE_FIELDS[rule["type"]]
        for key in rule:
            if key not in allowed:
                problems.append(f"{where}: field {key!r} is not used by a {rule['type']!r} rule")
        name = rule["name"]
        if name in seen:
            problems.append(f"{where}: field 'name' repeats the name of alert rule #{seen[name] + 1}")
        else:
            seen[name] = index
        channels = rule.get("channels", defaults.get("channels", ["log"]))
        enabled = rule.get("enabled", defaults.get("enabled", True))
        if enabled and "email" in channels and not (settings.get("email") or {}).get("to"):
            problems.append(
                f"{where}: field 'channels' uses email, but the file's channels.email has no 'to' recipients"
            )
    return problems


def _build(data: Mapping[str, Any], path: Path | None) -> AlertConfig:
    defaults = data.get("defaults") or {}
    rules: list[Rule] = []
    for raw in data.get("rules") or []:
        common: dict[str, Any] = {
            "name": raw["name"],
            "severity": raw.get("severity", defaults.get("severity", "warning")),
            "enabled": bool(raw.get("enabled", defaults.get("enabled", True))),
            "throttle": parse_duration(raw.get("throttle", defaults.get("throttle", "15m"))),
            "channels": tuple(raw.get("channels", defaults.get("channels", ["log"]))),
            "bucket": raw.get("bucket"),
            "prefix": raw.get("prefix"),
            "description": raw.get("description", ""),
        }
        rule_type = raw["type"]
        rule: Rule
        if rule_type == "label":
            rule = LabelRule(label=raw["label"], min_confidence=float(raw["min_confidence"]), **common)
        elif rule_type == "moderation":
            rule = ModerationRule(
                min_confidence=float(raw["min_confidence"]),
                categories=tuple(raw.get("categories") or ()),
                **common,
            )
        elif rule_type == "label_count":
            confidence = raw.get("min_confidence")
            rule = LabelCountRule(
                label=raw["label"],
                window=parse_duration(raw["window"]),
                threshold=int(raw["threshold"]),
                min_confidence=None if confidence is None else float(confidence),
                **common,
            )
        else:
            rule = NoIngestionRule(hours=float(raw["hours"]), **common)
        rules.append(rule)
    channels = {str(name): dict(value or {}) for name, value in (data.get("channels") or {}).items()}
    return AlertConfig(rules=rules, channels=channels, path=path)
