"""`make backfill FROM=2026-12-01T00:00 TO=2026-12-01T06:00 [DAG=image_ingest_s3_hourly]`.

Creates a backfill through the REST API of the Airflow that `make airflow` runs (same state
directory, ``.local/``; same login), exactly what the UI's *Trigger -> Backfill* does: one run
per schedule interval whose logical date is within ``[FROM, TO]`` (both included) and whose
interval has ended. The scheduler of `make airflow` then executes them.

A CLI ``airflow backfill create`` next to it would need ``AIRFLOW_HOME=.local/airflow`` and then
fail on the SQLite metadata DB the scheduler keeps busy (``database is locked``). Through the
api-server, a creation that meets a lock is rolled back and answered 503; this retries it (up to
two minutes). So `make airflow` must be running (in another terminal); without it this says so
and fails. A paused Dag is unpaused first, as the UI's backfill form does, or its runs would
never start.

Dates are ISO 8601, UTC unless they carry an offset; a bare date means its midnight.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("IMAGELABELS_DEMO_STATE", Path(__file__).resolve().parents[1] / ".local"))
ADDRESS_FILE = STATE / "airflow-local.json"  # written by scripts/airflow_local.py while it runs
DEFAULT_DAG = "image_ingest_s3_hourly"
BUSY_RETRY_SECONDS = 120
NOT_RUNNING = (
    "make airflow is not running{why}. Start it first, in another terminal (`make airflow`), then "
    "run `make backfill FROM=... TO=...` again: the backfill is created through its api-server and "
    "executed by its scheduler."
)


class BackfillError(Exception):
    """A message for the user; the exit status is 1."""


def parse_date(text: str) -> datetime:
    """ISO date or date-time; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or date-time (e.g. 2026-12-01T06:00)"
        ) from error
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _request(
    url: str, token: str | None = None, method: str = "GET", body: dict[str, Any] | None = None
) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    for attempt in itertools.count(1):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            # 503: SQLite was busy (the scheduler writing); Airflow rolled the attempt back
            if error.code != 503 or time.monotonic() > deadline:
                raise
            if attempt == 1:
                print(f"the metadata DB is busy ({_detail(error)}); retrying", file=sys.stderr)
            time.sleep(min(attempt, 5))
    raise AssertionError("unreachable")


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(error.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else json.dumps(detail) if detail else str(error)


def running_airflow() -> dict[str, Any]:
    """The address and login of the running `make airflow`, else :class:`BackfillError`."""
    try:
        found: dict[str, Any] = json.loads(ADDRESS_FILE.read_text())
    except (OSError, ValueError):
        raise BackfillError(NOT_RUNNING.format(why=f" (no {ADDRESS_FILE})")) from None
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        raise BackfillError(NOT_RUNNING.format(why=f" (process {found['pid']} has exited)")) from None
    except PermissionError:
        pass
    try:
        _request(f"{found['url']}/api/v2/version")
    except OSError as error:
        raise BackfillError(NOT_RUNNING.format(why=f" ({found['url']} does not answer: {error})")) from None
    return found


def create_backfill(
    dag_id: str, start: datetime, end: datetime, *, max_active_runs: int, reprocess: str, dry_run: bool
) -> int:
    airflow = running_airflow()
    url = airflow["url"]
    try:
        token = _request(
            f"{url}/auth/token",
            method="POST",
            body={"username": airflow["user"], "password": airflow["password"]},
        )["access_token"]
        dag_url = f"{url}/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}"
        dag = _request(dag_url, token)
        body = {
            "dag_id": dag_id,
            "from_date": start.isoformat(),
            "to_date": end.isoformat(),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess,
        }
        planned = _request(f"{url}/api/v2/backfills/dry_run", token, "POST", body)
        dates = [str(item.get("logical_date")) for item in planned.get("backfills", [])]
        if dry_run:
            print(f"dry run: a backfill of {dag_id} would create {len(dates)} run(s): {', '.join(dates)}")
            return 0
        if dag.get("is_paused"):
            # as the UI's backfill form does ("Unpause on trigger"): runs of a paused Dag never start
            _request(dag_url, token, "PATCH", {"is_paused": False})
            print(f"unpaused {dag_id} so that its backfill runs start")
        backfill = _request(f"{url}/api/v2/backfills", token, "POST", body)
    except urllib.error.HTTPError as error:
        hint = " (one backfill per Dag at a time: wait for it to complete, or cancel it in the UI)"
        raise BackfillError(
            f"{error.code} from {error.url}: {_detail(error)}{hint if error.code == 409 else ''}"
        ) from None
    except OSError as error:
        raise BackfillError(f"{url}: {error}") from None
    span = f"logical dates {dates[0]} .. {dates[-1]}" if dates else "no new runs"
    print(
        f"backfill {backfill['id']} of {dag_id}: {len(dates)} run(s), {span}, at most {max_active_runs} "
        f"at a time; watch it at {url}/dags/{dag_id}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make backfill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="start", metavar="FROM", type=parse_date, help="first logical date")
    parser.add_argument(
        "--to", dest="end", metavar="TO", type=parse_date, help="last logical date (included)"
    )
    parser.add_argument("--dag", metavar="DAG", default=DEFAULT_DAG, help=f"the Dag (default {DEFAULT_DAG})")
    parser.add_argument("--max-active-runs", type=int, default=4, help="runs of the backfill at a time")
    parser.add_argument(
        "--reprocess",
        choices=["none", "failed", "completed"],
        default="none",
        help="intervals that already have a run: skip them (none, the default), rerun failed ones, or all",
    )
    parser.add_argument("--dry-run", action="store_true", help="only list the runs it would create")
    args = parser.parse_args(argv)
    if args.start is None or args.end is None:
        parser.error(
            "FROM and TO are required: make backfill FROM=2026-12-01T00:00 TO=2026-12-01T06:00 [DAG=...]"
        )
    if args.end < args.start:
        parser.error(f"TO ({args.end.isoformat()}) is before FROM ({args.start.isoformat()})")
    try:
        return create_backfill(
            args.dag,
            args.start,
            args.end,
            max_active_runs=args.max_active_runs,
            reprocess=args.reprocess,
            dry_run=args.dry_run,
        )
    except BackfillError as error:
        print(f"make backfill: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
