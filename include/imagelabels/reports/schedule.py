"""When each report period runs, as the cron of its data interval."""

from __future__ import annotations

# The interval of a CronDataIntervalTimetable runs from one cron tick to the next, and the run
# starts when the interval closes: midnight UTC closes yesterday's daily report.
DEFAULT_CRONS = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",  # ISO weeks, Monday to Monday
    "monthly": "0 0 1 * *",
}


def data_interval_cron(period: str, schedule: str | None = None) -> str:
    """The cron whose ticks bound the report's intervals: ``schedule`` from the config when set
    (e.g. ``"0 6 * * *"`` for days that end at 06:00 UTC), else the period's calendar default."""
    if schedule:
        return schedule
    try:
        return DEFAULT_CRONS[period]
    except KeyError:
        raise ValueError(
            f"unknown report period {period!r}; expected one of {', '.join(DEFAULT_CRONS)}"
        ) from None
