"""The report config: the versioned default loads, and every mistake names the report and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from imagelabels.reports.config import (
    DEFAULT_CONFIG_PATH,
    EmailDelivery,
    ReportConfigError,
    get_report_config,
    load_report_configs,
    parse_report_configs,
)

VALID: dict[str, Any] = {
    "version": 1,
    "reports": [
        {"name": "daily", "period": "daily"},
        {
            "name": "weekly",
            "period": "weekly",
            "schedule": "0 6 * * 1",
            "top_n": 25,
            "prefix_depth": 2,
            "bucket": "acme-images",
            "prefix": "uploads/",
            "formats": ["pdf", "png", "xlsx"],
            "output": {"uri": "s3://reports-bucket/labels/"},
            "delivery": {
                "attempts": 5,
                "email": {"to": ["a@example.com"], "cc": ["b@example.com"], "subject": "{name}: {interval}"},
                "slack": {"conn_id": "slack_labels", "enabled": False},
                "webhook": {"endpoint": "/reports"},
            },
        },
    ],
}


def with_change(path: str, value: Any, *, index: int = 1) -> dict[str, Any]:
    """``VALID`` with the dotted ``path`` of ``reports[index]`` set to ``value`` (or removed)."""
    data = copy.deepcopy(VALID)
    node = data["reports"][index]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    if value is _REMOVE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_REMOVE = object()


def test_the_default_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGELABELS_REPORTS_CONFIG", raising=False)
    configs = load_report_configs()
    assert Path(__file__).resolve().parents[2] / "config" / "reports.yaml" == DEFAULT_CONFIG_PATH
    assert [(c.name, c.period) for c in configs] == [("daily", "daily"), ("weekly", "weekly")]
    for config in configs:
        # A fresh install only stores files: it never tries to send mail.
        assert config.delivery.enabled_channels() == []
        assert config.output.uri == "s3://{bucket}/_imagelabels/reports/"  # never listed by ingestion
        assert config.formats == ("csv", "xlsx", "png", "pdf", "json")


def test_the_env_variable_points_at_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "reports.yaml"
    path.write_text("version: 1\nreports:\n  - {name: hourly-ops, period: hourly}\n")
    monkeypatch.setenv("IMAGELABELS_REPORTS_CONFIG", str(path))
    assert [c.name for c in load_report_configs()] == ["hourly-ops"]
    assert get_report_config("hourly-ops").period == "hourly"
    with pytest.raises(ReportConfigError, match="no report named 'nope'; defined: hourly-ops"):
        get_report_config("nope")


def test_a_full_report_is_parsed_with_its_defaults() -> None:
    daily, weekly = parse_report_configs(VALID)
    assert (daily.schedule, daily.top_n, daily.prefix_depth, daily.bucket) == (None, 15, 1, None)
    assert daily.delivery.attempts == 3
    assert weekly.schedule == "0 6 * * 1"
    assert (weekly.top_n, weekly.prefix_depth, weekly.bucket, weekly.prefix) == (
        25,
        2,
        "acme-images",
        "uploads/",
    )
    assert weekly.formats == ("pdf", "png", "xlsx")
    assert weekly.output.uri == "s3://reports-bucket/labels/"
    assert weekly.delivery.email == EmailDelivery(
        to=("a@example.com",),
        cc=("b@example.com",),
        subject="{name}: {interval}",
        attachments=("pdf", "xlsx", "png"),
    )
    assert weekly.delivery.slack is not None
    assert (weekly.delivery.slack.conn_id, weekly.delivery.slack.enabled) == ("slack_labels", False)
    assert weekly.delivery.webhook is not None
    assert (weekly.delivery.webhook.conn_id, weekly.delivery.webhook.endpoint) == (
        "imagelabels_webhook",
        "/reports",
    )
    assert weekly.delivery.attempts == 5
    # Slack is configured but disabled: the DAG gets a task for email and webhook only.
    assert weekly.delivery.enabled_channels() == ["email", "webhook"]


def test_default_attachments_follow_the_rendered_formats() -> None:
    data = with_change("formats", ["csv", "pdf"])
    data["reports"][1]["delivery"]["email"].pop("attachments", None)
    email = parse_report_configs(data)[1].delivery.email
    assert email is not None
    assert email.attachments == ("pdf",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            with_change("period", "fortnightly"),
            "reports[1] 'weekly': field 'period' must be one of hourly, daily, weekly, monthly (got 'fortnightly')",
        ),
        (with_change("period", _REMOVE), "reports[1] 'weekly': field 'period' must be one of"),
        (with_change("perod", "daily"), "reports[1] 'weekly': unknown field(s) 'perod'"),
        (
            with_change("delivery.emial", {"to": ["a@example.com"]}),
            "reports[1] 'weekly': unknown field(s) 'delivery.emial' (allowed: email, slack, webhook, attempts)",
        ),
        (
            with_change("delivery.email.bcc", ["x@example.com"]),
            "reports[1] 'weekly': unknown field(s) 'delivery.email.bcc'",
        ),
        (with_change("output.path", "/tmp"), "reports[1] 'weekly': unknown field(s) 'output.path'"),
        (with_change("name", "daily"), "reports[1] 'daily': field 'name' duplicates reports[0]"),
        (
            with_change("name", "Weekly Report"),
            "reports[1] 'Weekly Report': field 'name' is required and must match",
        ),
        (
            with_change("name", _REMOVE),
            "reports[1]: field 'name' is required and must match [a-z0-9_-]+ (got None)",
        ),
        (
            with_change("formats", ["pdf", "docx"]),
            "reports[1] 'weekly': field 'formats' entries must be among csv, xlsx, png, pdf, json (got 'docx')",
        ),
        (with_change("formats", []), "reports[1] 'weekly': field 'formats' must be a non-empty list"),
        (with_change("formats", ["pdf", "pdf"]), "reports[1] 'weekly': field 'formats' lists an entry twice"),
        (
            with_change("delivery.email.to", _REMOVE),
            "reports[1] 'weekly': field 'delivery.email.to' needs at least one address",
        ),
        (with_change("delivery.email.to", []), "field 'delivery.email.to' needs at least one address"),
        (
            with_change("delivery.email.to", ["not-an-address"]),
            "reports[1] 'weekly': field 'delivery.email.to' entries must be email addresses (got 'not-an-address')",
        ),
        (
            with_change("delivery.email.subject", "Report {nmae}"),
            "field 'delivery.email.subject' may only use {name}, {period}, {interval}",
        ),
        (
            with_change("delivery.email.attachments", ["csv"]),
            "field 'delivery.email.attachments' names formats the report does not render: csv",
        ),
        (with_change("delivery.slack.enabled", "no"), "field 'delivery.slack.enabled' must be true or false"),
        (
            with_change("delivery.attempts", 0),
            "field 'delivery.attempts' must be an integer within 1..10 (got 0)",
        ),
        (
            with_change("delivery.webhook", "imagelabels_webhook"),
            "field 'delivery.webhook' must be a mapping",
        ),
        (
            with_change("delivery.webhook.endpoint", "/a b"),
            "field 'delivery.webhook.endpoint' must be a URL path",
        ),
        (
            with_change("top_n", 0),
            "reports[1] 'weekly': field 'top_n' must be an integer within 1..1000 (got 0)",
        ),
        (with_change("top_n", "15"), "field 'top_n' must be an integer"),
        (with_change("top_n", True), "field 'top_n' must be an integer"),
        (with_change("prefix_depth", -1), "field 'prefix_depth' must be an integer within 0..32"),
        (with_change("bucket", ""), "field 'bucket' must be a non-empty string"),
        (with_change("schedule", "every day"), "field 'schedule' must be a 5-field cron expression"),
        (with_change("schedule", "61 * * * *"), "field 'schedule' must be a 5-field cron expression"),
        (
            with_change("output.uri", "s3://{bucket}/{name}/"),
            "field 'output.uri' may only use the placeholder {bucket}",
        ),
        (with_change("output.uri", "s3:///reports"), "field 'output.uri' names no bucket"),
        (
            with_change("output.uri", "gs://b/reports"),
            "field 'output.uri' must be s3://bucket/prefix or a local",
        ),
    ],
)
def test_each_mistake_names_the_report_and_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ReportConfigError) as raised:
        parse_report_configs(data)
    assert message in str(raised.value)


def test_a_disabled_email_needs_no_recipients() -> None:
    data = with_change("delivery.email", {"enabled": False})
    email = parse_report_configs(data)[1].delivery.email
    assert email is not None
    assert (email.enabled, email.to) == (False, ())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "the config must be a mapping with 'version' and 'reports' (got list)"),
        ({"version": 2, "reports": []}, "field 'version' must be 1 (got 2)"),
        ({"version": 1}, "field 'reports' must be a non-empty list (got nothing)"),
        ({"version": 1, "reports": []}, "field 'reports' must be a non-empty list (got list)"),
        ({"version": 1, "reports": ["daily"]}, "reports[0]: must be a mapping (got str)"),
        (
            {"version": 1, "reports": [{"name": "d", "period": "daily"}], "extra": 1},
            "unknown field(s) 'extra'",
        ),
    ],
)
def test_top_level_mistakes(data: Any, message: str) -> None:
    with pytest.raises(ReportConfigError) as raised:
        parse_report_configs(data)
    assert message in str(raised.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ReportConfigError, match="cannot read the report config"):
        load_report_configs(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nreports: [\n")
    with pytest.raises(ReportConfigError, match="not valid YAML"):
        load_report_configs(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nreports:\n  - {name: daily, period: yearly}\n")
    with pytest.raises(ReportConfigError) as raised:
        load_report_configs(bad)
    assert str(raised.value).startswith(f"{bad}: reports[0] 'daily': field 'period'")


# --- every mistake, and only the broken entries are lost ---------------------------------------

from imagelabels.reports import config as report_config  # noqa: E402  (new API, used below)

TWO_BROKEN: dict[str, Any] = {
    "version": 1,
    "reports": [
        {"name": "daily", "period": "daily"},
        {"name": "weekly", "perod": "weekly", "top_n": 0, "delivery": {"emial": {"to": ["a@example.com"]}}},
        {"name": "monthly", "period": "monthly", "formats": ["pdf", "docx"], "schedule": "every month"},
        {"period": "hourly", "delivery": {"email": {"to": ["not-an-address"], "subject": "{nmae}"}}},
    ],
}


def test_every_mistake_of_every_report_is_listed_with_report_and_field() -> None:
    with pytest.raises(ReportConfigError) as raised:
        parse_report_configs(TWO_BROKEN)
    message = str(raised.value)
    for expected in (
        "reports[1] 'weekly': unknown field(s) 'perod'",
        "reports[1] 'weekly': field 'period' must be one of hourly, daily, weekly, monthly (got None)",
        "reports[1] 'weekly': field 'top_n' must be an integer within 1..1000 (got 0)",
        "reports[1] 'weekly': unknown field(s) 'delivery.emial' (allowed: email, slack, webhook, attempts)",
        "reports[2] 'monthly': field 'formats' entries must be among csv, xlsx, png, pdf, json (got 'docx')",
        "reports[2] 'monthly': field 'schedule' must be a 5-field cron expression or an @preset "
        "(got 'every month')",
        "reports[3]: field 'name' is required and must match [a-z0-9_-]+ (got None)",
        "reports[3]: field 'delivery.email.to' entries must be email addresses (got 'not-an-address')",
        "reports[3]: field 'delivery.email.subject' may only use {name}, {period}, {interval} (got '{nmae}')",
    ):
        assert expected in message
    assert "reports[0]" not in message
    assert len(message.splitlines()) == 9  # one line per mistake


def test_a_mistake_costs_only_the_report_it_is_in() -> None:
    checked = report_config.check_report_configs(TWO_BROKEN)
    assert [c.name for c in checked.reports] == ["daily"]
    assert checked.invalid == ["reports[1] 'weekly'", "reports[2] 'monthly'", "reports[3]"]
    assert len(checked.problems) == 9


def test_a_task_finds_its_report_beside_a_broken_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "reports.yaml"
    path.write_text(
        "version: 1\nreports:\n  - {name: daily, period: daily}\n  - {name: weekly, period: fortnightly}\n"
    )
    monkeypatch.setenv("IMAGELABELS_REPORTS_CONFIG", str(path))
    assert get_report_config("daily").period == "daily"
    with pytest.raises(ReportConfigError) as raised:
        get_report_config("weekly")
    assert str(raised.value) == (
        f"report 'weekly' is invalid:\n{path}: reports[1] 'weekly': field 'period' must be one of "
        "hourly, daily, weekly, monthly (got 'fortnightly')"
    )
    read = report_config.read_report_configs()
    assert ([c.name for c in read.reports], read.invalid, read.source) == (
        ["daily"],
        ["reports[1] 'weekly'"],
        str(path),
    )


def test_an_unknown_top_level_field_refuses_nothing_but_a_wrong_version_refuses_all() -> None:
    extra = report_config.check_report_configs({**VALID, "extra": 1})
    assert [c.name for c in extra.reports] == ["daily", "weekly"]
    assert extra.problems == ["unknown field(s) 'extra' (allowed: version, reports)"]
    wrong = report_config.check_report_configs({**VALID, "version": 2})
    assert (wrong.reports, wrong.problems) == ([], ["field 'version' must be 1 (got 2)"])


def test_a_reserved_or_duplicate_name_refuses_that_entry_only() -> None:
    data = copy.deepcopy(VALID)
    data["reports"].append({"name": "config_errors", "period": "daily"})
    data["reports"].append({"name": "daily", "period": "weekly"})
    checked = report_config.check_report_configs(data)
    assert [c.name for c in checked.reports] == ["daily", "weekly"]
    assert checked.problems == [
        "reports[2] 'config_errors': field 'name' is reserved (image_label_report_config_errors lists "
        "the mistakes of this file)",
        "reports[3] 'daily': field 'name' duplicates reports[0]",
    ]


def test_messages_never_repeat_a_long_or_token_like_value(tmp_path: Path) -> None:
    secret = "xoxb-1234567890-abcdefghijklmnop"
    data = with_change("top_n", secret)
    data["reports"][1]["bucket"] = "x" * 300
    with pytest.raises(ReportConfigError) as raised:
        parse_report_configs(data)
    message = str(raised.value)
    assert (
        f"field 'top_n' must be an integer within 1..1000 (got a string of {len(secret)} characters)"
        in message
    )
    assert secret not in message
    assert "x" * 50 not in message
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"version: 1\nreports:\n  - name: daily\n    password: *{secret}\n")
    read = report_config.read_report_configs(broken)
    assert read.problems == ["not valid YAML (line 4, column 15)"]


def test_the_problems_page_lists_every_mistake_in_a_code_block() -> None:
    checked = report_config.check_report_configs(TWO_BROKEN)
    doc = report_config.problems_doc(checked)
    assert "reports[1] 'weekly', reports[2] 'monthly', reports[3]" in doc
    for problem in checked.problems:
        assert problem in doc
    assert "```text\n" in doc
