"""Alert rules: the versioned YAML file, its JSON Schema and the checks a schema cannot express.

The file (``config/alert_rules.yaml``, or ``IMAGELABELS_ALERT_RULES``) is edited by people who are
not reading this code, so every error names the rule (its 1-based position and its name) and the
field, and says what the field must be::

    alert rule #2 'weapon-detected': field 'min_confidence' must be a number between 0 and 100 (got 'high')

The JSON Schema (``config/alert_rules.schema.json``) is the single description of the format
(editors can use it too); each of its properties carries an ``x-expected`` phrase that these
messages quote. What a schema says badly is checked here: which fields each rule type may use,
unique names, and that a channel a rule uses is configured well enough to send.

The file a run reads can be chosen by whoever triggers it (the DAG's ``rules_file`` Param), so
:func:`load_config` reads a named file only from the project's ``config/`` or a folder of
``IMAGELABELS_RULES_DIRS`` (see :func:`checked_rules_file`), and no error ever quotes the file:
YAML errors give line and column, schema errors the rule and field and at most a short value
(see :func:`shown_value`).

Why this module is long: the rule file's schema, its validation with one message per mistake, and
how a rule's values are shown are one contract with ``config/alert_rules.schema.json``; split, a
field's parsing and its display would drift apart.
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

from imagelabels import settings
from imagelabels.settings import environment_value

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "config"
DEFAULT_RULES_PATH = CONFIG_DIR / "alert_rules.yaml"
SCHEMA_PATH = CONFIG_DIR / "alert_rules.schema.json"
RULES_ENV = "IMAGELABELS_ALERT_RULES"
RULES_DIRS_ENV = "IMAGELABELS_RULES_DIRS"
RULES_SUFFIXES = (".yaml", ".yml")
PARAM = "rules_file"

RULE_TYPES = ("label", "moderation", "label_count", "no_ingestion")
CHANNELS = ("email", "slack", "webhook", "log")

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
_SHOWN_MAX = 40  # longest string value an error message repeats
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
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
    configured = environment_value(RULES_ENV).strip()
    return Path(configured) if configured else DEFAULT_RULES_PATH


def allowed_rules_dirs() -> list[Path]:
    """The folders a named rules file may lie in, resolved: the project's ``config/`` and each
    folder of ``IMAGELABELS_RULES_DIRS`` (relative ones start at the project folder)."""
    folders = [CONFIG_DIR, *(Path(entry) for entry in settings.rules_dirs())]
    resolved = [(folder if folder.is_absolute() else ROOT / folder).resolve() for folder in folders]
    return list(dict.fromkeys(resolved))


def _configured_file() -> Path | None:
    """The file ``IMAGELABELS_ALERT_RULES`` names, resolved: the deployment chose it, so it is
    readable wherever it lies (and may be named again as ``rules_file``)."""
    configured = environment_value(RULES_ENV).strip()
    return Path(configured).resolve() if configured else None


def _checked(value: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(shown, real)``: the named file as an absolute path for messages and its resolved
    path to read, or :class:`RuleError` when it may not be read."""
    text = os.fspath(value).strip()
    if not text or "\x00" in text:
        raise RuleError(f"field {PARAM!r} must be the path of a rules file (got {text!r})")
    given = Path(text)
    if ".." in given.parts:
        raise RuleError(f"field {PARAM!r} must not contain '..' (got {text!r})")
    shown = given if given.is_absolute() else ROOT / given
    real = shown.resolve()
    if real != _configured_file():
        allowed = allowed_rules_dirs()
        if not any(real.is_relative_to(folder) for folder in allowed):
            via = " (through a symbolic link)" if real != Path(os.path.abspath(shown)) else ""
            raise RuleError(
                f"field {PARAM!r}: {text!r}{via} is outside the folders alert rules are read from: "
                f"{', '.join(str(folder) for folder in allowed)} (the project's config/ and "
                f"{RULES_DIRS_ENV}, folders separated by '{os.pathsep}')"
            )
    if shown.suffix.lower() not in RULES_SUFFIXES or real.suffix.lower() not in RULES_SUFFIXES:
        raise RuleError(f"field {PARAM!r} must name a .yaml or .yml file (got {text!r})")
    if real.exists() and not real.is_file():
        raise RuleError(f"field {PARAM!r} must name a regular file (got {text!r})")
    return shown, real


def checked_rules_file(value: str | os.PathLike[str]) -> Path:
    """The resolved path of the rules file ``value`` names, if it may be read.

    ``value`` comes from whoever triggers a run, so it is refused (:class:`RuleError` naming the
    field) when it contains ``..``, is not a ``.yaml``/``.yml`` file, or resolves - symbolic
    links followed - outside :func:`allowed_rules_dirs`; the one exception is the file the
    deployment configured in ``IMAGELABELS_ALERT_RULES``. A relative path starts at the project
    folder (``config/my_rules.yaml``).
    """
    return _checked(value)[1]


def load_rules(path: Path | None = None) -> list[Rule]:
    """The rules of the rules file (see :func:`load_config`)."""
    return load_config(path).rules


def load_config(path: Path | str | None = None) -> AlertConfig:
    """Read, validate and convert the rules file; :class:`RuleError` names what is wrong.

    A named ``path`` must pass :func:`checked_rules_file`; without one, the deployment's file
    (``IMAGELABELS_ALERT_RULES``, else ``config/alert_rules.yaml``) is read.
    """
    if path is not None:
        source, real = _checked(path)
    else:
        source = real = rules_path()
    try:
        text = real.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise RuleError(f"cannot read alert rules file {source}: {reason}") from error
    config = parse_config(text, source=str(source))
    return AlertConfig(rules=config.rules, channels=config.channels, path=real)


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


def _without_quoted(message: str) -> str:
    """A YAML library message without what it quotes from the file (an alias, a tag, a
    character): everything from the first quote to the last becomes ``...``."""
    quotes = [i for i, char in enumerate(message) if char in "'\"`"]
    if not quotes:
        return message
    return f"{message[: quotes[0]]}...{message[quotes[-1] + 1 :] if len(quotes) > 1 else ''}".strip()


def _parse_yaml(text: str, source: str) -> Any:
    """The parsed YAML; a syntax error names the line and column and what the parser expected,
    never the text there (the file could be anything until it parses as rules)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(_without_quoted(str(part)) for part in (error.context, error.problem) if part)
        raise RuleError(f"alert rules file {source}{where}: YAML syntax error: {problem}") from error
    except yaml.YAMLError as error:
        raise RuleError(f"alert rules file {source}: YAML syntax error ({type(error).__name__})") from error


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the rules file."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _token_like(text: str) -> bool:
    """Whether a string looks like a key or token: long, no spaces, letters and digits mixed."""
    return (
        len(text) >= 16
        and not any(char.isspace() for char in text)
        and any(char.isdigit() for char in text)
        and any(char.isalpha() for char in text)
    )


def _literal(value: Any) -> str | None:
    """``repr(value)`` when a message may repeat the value itself, else ``None``."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str) and len(value) <= _SHOWN_MAX and value.isprintable() and not _token_like(value):
        return repr(value)
    if isinstance(value, (list, dict)) and not value:
        return repr(value)
    return None


def shown_value(value: Any) -> str:
    """How an error message shows an offending value of a field.

    A value is data from a file that may not be a rules file at all, and a secret can be a
    scalar: numbers, booleans and null are shown; a string only when it is short, on one line
    and does not look like a token (what people mistype in a rules field - ``high``,
    ``5 minutes``, ``pager`` - is shown; a key or password is described by its length); a list
    only when it holds at most five such values. Anything else is described by kind and size.
    Callers never show the whole document: a one-line token file parses as one string.
    """
    literal = _literal(value)
    if literal is not None:
        return literal
    if isinstance(value, list):
        items = [_literal(item) for item in value]
        if len(items) <= 5 and all(item is not None for item in items):
            return "[" + ", ".join(str(item) for item in items) + "]"
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key{'s' if len(value) != 1 else ''}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a {type(value).__name__}"


def shown_key(key: Any) -> str:
    """A field name from the file as a message shows it: quoted when it looks like a field
    name, else described (a key can be a secret too)."""
    text = str(key)
    if _KEY.fullmatch(text) and not _token_like(text):
        return repr(text)
    return f"a field name of {len(text)} characters"


def _where(data: Any, path: Sequence[Any]) -> str:
    """``alert rule #2 'name'`` for a path inside ``rules``, else ``top level``."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        index = path[1]
        rules = data.get("rules") if isinstance(data, dict) else None
        rule = rules[index] if isinstance(rules, list) and index < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        label = f"alert rule #{index + 1}"
        shown = shown_value(name) if isinstance(name, str) and name else ""
        return f"{label} {shown}" if shown.startswith("'") else label
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
    return ".".join(part if isinstance(part, str) else str(part) for part in rest), item


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
        return f"{where}: unknown {noun} {', '.join(shown_key(key) for key in unknown)}{scope}"
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
    # the document itself is never shown: a file that is one string is all of that string
    got = f" (got {shown_value(error.instance)})" if path else f" (got {_kind(error.instance)})"
    if error.validator == "uniqueItems":
        return f"{where}: {subject} lists a value twice{got}"
    expected = error.schema.get("x-expected") if isinstance(error.schema, dict) else None
    if not path:
        expected = "a mapping with 'version' and 'rules'"
    if expected:
        return f"{where}: {subject} must be {expected}{got}"
    return f"{where}: {subject} breaks the schema's {error.validator!r} rule{got}"


def _kind(value: Any) -> str:
    """What a whole document is, without any of its content."""
    kinds = {str: "a string", list: "a list", dict: "a mapping", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


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
