"""Links to stored report files that never expire: the Image search page's ``api/reports`` route.

A presigned link lives only as long as the credentials that signed it (an assumed role's: often
an hour), so a report mailed with 7-day links fails the same day. Where the Airflow UI's base URL
is known, report messages link to the page instead, which serves the stored files to signed-in
Airflow users with the api-server's credentials (:func:`imagelabels.webapp.create_app`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from imagelabels.reports.config import ReportConfig
from imagelabels.reports.delivery import output_root

REPORT_FILE_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def report_file_path(config: ReportConfig, relative: str) -> str:
    """Where the stored file ``relative`` (below ``<output>/<name>/``, e.g.
    ``2026/11/28/label-report_daily_2026-11-28.pdf``) of report ``config`` is: an ``s3://`` URI
    or a local path. Only the names this module writes are accepted: parts of letters, digits,
    ``._-`` (none starting with a dot, so never ``..``) and a report file suffix; else
    :class:`ValueError` -- the Image search page serves these to signed-in users."""
    parts = relative.split("/")
    if not (
        0 < len(parts) <= 5
        and all(_PATH_PART.fullmatch(part) for part in parts)
        and Path(parts[-1]).suffix.lower() in REPORT_FILE_TYPES
    ):
        raise ValueError("not a report file")
    return f"{output_root(config)}{config.name}/{relative}"


def report_page_links(config: ReportConfig, uris: Sequence[str], base_url: str) -> dict[str, str]:
    """File name -> the Image search page's route for that stored file (``api/reports/<name>/…``):
    opened by a signed-in Airflow user, served with the api-server's credentials, so it never
    expires (a presigned link lives only as long as the credentials that signed it)."""
    from urllib.parse import quote

    from imagelabels.search.queries import PAGE_MOUNT

    below = f"{output_root(config)}{config.name}/"
    links = {}
    for uri in uris:
        if uri.startswith(below):
            relative = uri[len(below) :]
            report_file_path(config, relative)  # what the route will accept
            links[uri.rsplit("/", 1)[-1]] = (
                f"{base_url.rstrip('/')}{PAGE_MOUNT}/api/reports/{quote(config.name, safe='')}/{quote(relative)}"
            )
    return links
