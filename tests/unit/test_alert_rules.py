"""The alert rules file: the shipped default loads, and every kind of mistake is named precisely
(rule position and name, field, what it must be)."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from imagelabels.alerts.rules import (
    DEFAULT_RULES_PATH,
    RULES_ENV,
    LabelCountRule,
    LabelRule,
    ModerationRule,
    NoIngestionRule,
    RuleError,
    load_config,
    load_rules,
    parse_duration,
)

RULES_DIRS = "IMAGELABELS_RULES_DIRS"
ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-Sup3rS3cretT0ken-9f8e7d"


@pytest.fixture(autouse=True)
def _tmp_path_holds_rule_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule files outside config/ are refused unless a folder is allowed: these tests write
    theirs under ``tmp_path``, so they allow it (as a deployment would with its own folder)."""
    monkeypatch.setenv(RULES_DIRS, str(tmp_path))
    monkeypatch.delenv(RULES_ENV, raising=False)


GOOD = """\
version: 1
defaults: {throttle: 15m, channels: [slack]}
channels:
  email: {conn_id: smtp_default, to: [ops@example.com]}
  slack: {conn_id: slack_webhook_default}
  webhook: {conn_id: imagelabels_webhook, endpoint: /alerts}
rules:
  - name: weapon-detected
    type: label
    label: Weapon
    min_confidence: 80
  - name: nsfw-upload
    type: moderation
    categories: [Explicit Nudity, Explicit]
    min_confidence: 60
    channels: [email, webhook]
    severity: critical
  - name: many-cats
    type: label_count
    label: Cat
    window: 1h
    threshold: 100
    bucket: photos
    prefix: uploads/
  - name: pipeline-stalled
    type: no_ingestion
    hours: 6
    throttle: 0
    enabled: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(RuleError) as caught:
        load_rules(write(tmp_path, text))
    return str(caught.value)


def test_the_default_file_loads_with_log_only_channels() -> None:
    config = load_config(DEFAULT_RULES_PATH)
    by_name = {rule.name: rule for rule in config.rules}
    assert isinstance(by_name["explicit-content"], ModerationRule)
    assert "Explicit Nudity" in by_name["explicit-content"].categories
    assert isinstance(by_name["weapon-detected"], LabelRule)
    assert by_name["weapon-detected"].label == "Weapon"
    stalled = by_name["pipeline-stalled"]
    assert isinstance(stalled, NoIngestionRule)
    assert stalled.hours == 6
    # a fresh install sends nothing anywhere but the task log
    assert {channel for rule in config.rules for channel in rule.channels} == {"log"}
    assert config.channels == {}


def test_env_overrides_the_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RULES_ENV, str(write(tmp_path, GOOD)))
    assert [rule.name for rule in load_rules()] == [
        "weapon-detected",
        "nsfw-upload",
        "many-cats",
        "pipeline-stalled",
    ]


def test_a_full_file_becomes_typed_rules_with_defaults_applied(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    weapon, nsfw, cats, stalled = config.rules
    assert weapon == LabelRule(
        name="weapon-detected",
        label="Weapon",
        min_confidence=80.0,
        throttle=timedelta(minutes=15),
        channels=("slack",),
    )
    assert isinstance(nsfw, ModerationRule)
    assert (nsfw.categories, nsfw.channels, nsfw.severity) == (
        ("Explicit Nudity", "Explicit"),
        ("email", "webhook"),
        "critical",
    )
    assert isinstance(cats, LabelCountRule)
    assert (cats.window, cats.threshold, cats.bucket, cats.prefix) == (
        timedelta(hours=1),
        100,
        "photos",
        "uploads/",
    )
    assert isinstance(stalled, NoIngestionRule)
    assert (stalled.throttle, stalled.enabled) == (timedelta(0), False)
    assert config.channels["webhook"] == {"conn_id": "imagelabels_webhook", "endpoint": "/alerts"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
    ],
)
def test_durations(text: str | int, value: timedelta) -> None:
    assert parse_duration(text) == value


def _one_rule(body: str) -> str:
    return "version: 1\nrules:\n  - name: ok-rule\n    type: no_ingestion\n    hours: 1\n" + textwrap.indent(
        textwrap.dedent(body), "  "
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(
            """\
            - name: weapon-detected
              type: regex
              label: Weapon
            """,
            "alert rule #2 'weapon-detected': field 'type' must be one of label, moderation, "
            "label_count or no_ingestion (got 'regex')",
            id="unknown-type",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              min_confidence: 80
            """,
            "alert rule #2 'weapon-detected': field 'label' is required for a 'label' rule",
            id="missing-label",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: high
            """,
            "alert rule #2 'weapon-detected': field 'min_confidence' must be a number between 0 and 100 "
            "(got 'high')",
            id="confidence-word",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 150
            """,
            "alert rule #2 'weapon-detected': field 'min_confidence' must be a number between 0 and 100 "
            "(got 150)",
            id="confidence-150",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              notify_everyone: true
            """,
            "alert rule #2 'weapon-detected': unknown field 'notify_everyone'",
            id="unknown-field",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              hours: 3
            """,
            "alert rule #2 'weapon-detected': field 'hours' is not used by a 'label' rule",
            id="field-of-another-type",
        ),
        pytest.param(
            """\
            - name: ok-rule
              type: label
              label: Weapon
              min_confidence: 80
            """,
            "alert rule #2 'ok-rule': field 'name' repeats the name of alert rule #1",
            id="duplicate-name",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              throttle: 5 minutes
            """,
            "alert rule #2 'weapon-detected': field 'throttle' must be a duration such as 30s, 15m, 1h "
            "or 2d (0 for none) (got '5 minutes')",
            id="bad-throttle",
        ),
        pytest.param(
            """\
            - name: many-cats
              type: label_count
              label: Cat
              window: 1 hour
              threshold: 100
            """,
            "alert rule #2 'many-cats': field 'window' must be a duration above zero such as 30s, 15m, "
            "1h or 2d (got '1 hour')",
            id="bad-window",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              channels: [log, pager]
            """,
            "alert rule #2 'weapon-detected': field 'channels' item #2 must be one of email, slack, "
            "webhook or log (got 'pager')",
            id="bad-channel",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              channels: []
            """,
            "alert rule #2 'weapon-detected': field 'channels' must be a non-empty list of channels out of "
            "email, slack, webhook and log (got [])",
            id="no-channels",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              channels: [email]
            """,
            "alert rule #2 'weapon-detected': field 'channels' uses email, but the file's channels.email "
            "has no 'to' recipients",
            id="email-without-recipients",
        ),
        pytest.param(
            """\
            - name: Weapon Detected
              type: label
              label: Weapon
              min_confidence: 80
            """,
            "alert rule #2 'Weapon Detected': field 'name' must be lower-case letters, digits and dashes",
            id="bad-name",
        ),
        pytest.param(
            """\
            - name: weapon-detected
              type: label
              label: Weapon
              min_confidence: 80
              severity: urgent
            """,
            "alert rule #2 'weapon-detected': field 'severity' must be one of info, warning or critical "
            "(got 'urgent')",
            id="bad-severity",
        ),
    ],
)
def test_invalid_rule_names_rule_and_field(tmp_path: Path, rule: str, expected: str) -> None:
    message = error_of(tmp_path, _one_rule(rule))
    assert expected in message
    assert str(tmp_path / "rules.yaml") in message


def test_several_mistakes_are_all_reported(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        _one_rule(
            """\
            - name: a
              type: label
              label: Weapon
              min_confidence: high
            - name: b
              type: moderation
              min_confidence: -1
            """
        ),
    )
    assert "alert rule #2 'a': field 'min_confidence'" in message
    assert "alert rule #3 'b': field 'min_confidence' must be a number between 0 and 100 (got -1)" in message


def test_top_level_mistakes(tmp_path: Path) -> None:
    message = error_of(tmp_path, "version: 2\nrules: []\nnotifications: {}\n")
    assert "top level: unknown field 'notifications'" in message
    assert "top level: field 'rules' must be a list of rules (got {})" in error_of(
        tmp_path, "version: 1\nrules: {}\n"
    )
    assert "alert rule #1: the rule must be a mapping with at least name and type (got 3)" in error_of(
        tmp_path, "version: 1\nrules:\n  - 3\n"
    )
    assert "top level: field 'version' must be 1" in message
    assert "the file is empty" in error_of(tmp_path, "# nothing\n")
    channels = error_of(tmp_path, "version: 1\nrules: []\nchannels:\n  email: {to: [not-an-address]}\n")
    assert "field 'email.to' item #1 must be an email address (got 'not-an-address')" in channels


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """\
        version: 1
        rules:
          - name: weapon-detected
            type: label
            label: [Weapon
            min_confidence: 80
        """,
    )
    assert str(tmp_path / "rules.yaml") in message
    assert "line 6" in message
    assert "YAML syntax error" in message


def test_missing_file_is_a_rule_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read alert rules file"):
        load_rules(tmp_path / "absent.yaml")


# --- which files may be read, and what an error may show ------------------------------------------


def refusal(path: str | Path) -> str:
    with pytest.raises(RuleError) as caught:
        load_config(Path(path))
    return str(caught.value)


def test_a_system_file_is_refused_without_showing_its_content() -> None:
    message = refusal("/etc/passwd")
    assert "field 'rules_file'" in message
    assert "'/etc/passwd' is outside the folders alert rules are read from" in message
    assert "IMAGELABELS_RULES_DIRS" in message
    assert "root:" not in message


def test_a_dotenv_beside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    for path in ("../.env", str(tmp_path / "sub" / ".." / ".env"), "config/../.env"):
        message = refusal(path)
        assert "field 'rules_file'" in message
        assert "must not contain '..'" in message, path
        assert SECRET not in message


def test_only_yaml_files_are_read_even_inside_an_allowed_folder(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    message = refusal(token)
    assert "field 'rules_file' must name a .yaml or .yml file" in message
    assert SECRET not in message


def test_a_symlink_out_of_an_allowed_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "key.yaml").write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    (allowed / "rules.yaml").symlink_to(outside / "key.yaml")
    (allowed / "linked").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(RULES_DIRS, str(allowed))
    for path in (allowed / "rules.yaml", allowed / "linked" / "key.yaml"):
        message = refusal(path)
        assert (
            f"{str(path)!r} (through a symbolic link) is outside the folders alert rules are read from"
            in message
        )
        assert str(allowed) in message  # the folders that are allowed are named
        assert SECRET not in message
        assert "BEGIN" not in message


def test_a_symlink_inside_the_allowed_folders_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "real.yaml").write_text(GOOD)
    (first / "rules.yml").symlink_to(second / "real.yaml")
    monkeypatch.setenv(RULES_DIRS, f"{first}{os.pathsep}{second}")
    assert len(load_rules(first / "rules.yml")) == 4


def test_the_config_folder_is_always_allowed_and_relative_paths_start_at_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RULES_DIRS)
    monkeypatch.chdir("/")
    assert load_config(Path("config/alert_rules.yaml")).path == DEFAULT_RULES_PATH
    assert load_config(DEFAULT_RULES_PATH).rules


def test_a_folder_that_is_not_allowed_any_more_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.delenv(RULES_DIRS)
    assert "is outside the folders alert rules are read from" in refusal(path)


def test_the_file_a_deployment_configures_needs_no_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAGELABELS_ALERT_RULES is set by whoever deploys, not by whoever triggers a run: the file
    it names is read (and may be named again as ``rules_file``)."""
    path = write(tmp_path, GOOD)
    monkeypatch.delenv(RULES_DIRS)
    monkeypatch.setenv(RULES_ENV, str(path))
    assert len(load_rules()) == 4
    assert len(load_rules(path)) == 4


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(f"version: 1\nrules:\n  - name: x\n    token: *{SECRET}\n", "line 4", id="alias"),
        pytest.param(f"version: 1\nrules: [\n  password: '{SECRET}\n", "line 4", id="open-quote"),
        pytest.param(f"version: 1\nrules:\n\t- {SECRET}\n", "line 3, column 1", id="tab"),
        pytest.param(f"version: 1\nkey: {SECRET}: x\n", "line 2", id="colon"),
        pytest.param(f"version: 1\nkey: !{SECRET} x\n", "line 2", id="tag"),
        pytest.param(f'version: 1\nkey: "\\q{SECRET}"\n', "line 2", id="escape"),
    ],
)
def test_a_yaml_error_gives_line_and_column_but_not_the_line(tmp_path: Path, text: str, where: str) -> None:
    message = error_of(tmp_path, text)
    assert "YAML syntax error" in message
    assert where in message
    assert SECRET not in message
    assert SECRET[:8] not in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"{SECRET}\n", id="one-line-token-file"),
        pytest.param("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin\n", id="passwd"),
        pytest.param(f"- {SECRET}\n- {SECRET}\n", id="a-list"),
        pytest.param(f"version: 1\nrules: []\naws_secret_access_key: {SECRET}\n", id="unknown-key"),
        pytest.param(f"version: 1\nrules:\n  - name: x\n    type: label\n    label: {SECRET}\n", id="field"),
        pytest.param(f"version: 1\nrules: {SECRET}\n", id="wrong-type"),
        pytest.param(f"version: 1\nrules:\n  - name: {SECRET}\n    type: label\n", id="rule-name"),
        pytest.param(f"version: 1\nrules:\n  - name: x\n    {SECRET}: 1\n    type: label\n", id="key"),
        pytest.param(f"version: 1\nrules:\n  - name: x\n    type: [{SECRET}]\n", id="in-a-list"),
        pytest.param(
            "version: 1\nrules:\n  - name: x\n    type: label\n    label: a\n    min_confidence: 1\n"
            f"    channels: [log, log]\n    description: {SECRET}\n    bucket: |\n      {SECRET}\n      x\n",
            id="long-and-multi-line",
        ),
    ],
)
def test_a_schema_error_never_shows_a_secret_looking_value(tmp_path: Path, text: str) -> None:
    message = error_of(tmp_path, text)
    assert SECRET not in message
    assert "root:x" not in message
    assert "invalid alert rules file" in message


def test_a_schema_error_shows_a_short_typed_value_and_names_rule_and_field(tmp_path: Path) -> None:
    message = error_of(tmp_path, "version: 1\nrules: hello\n")
    assert "top level: field 'rules' must be a list of rules (got 'hello')" in message
    long_word = "x" * 80
    message = error_of(
        tmp_path, _one_rule(f"- name: a\n  type: label\n  label: W\n  min_confidence: {long_word}\n")
    )
    assert (
        "alert rule #2 'a': field 'min_confidence' must be a number between 0 and 100 "
        "(got a string of 80 characters)"
    ) in message
    whole = error_of(tmp_path, "just words\n")
    assert "top level: the file must be a mapping" in whole
    assert "just words" not in whole  # the whole document is never shown
