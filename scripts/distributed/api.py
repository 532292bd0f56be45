"""A small client of Airflow's REST API (v2): log in, unpause, trigger, wait, read task instances.

Everything the run checks about Airflow comes through the public API, as it would against a real
deployment; nothing reads the metadata DB directly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowApi:
    """JSON over HTTP with a bearer token from the simple auth manager."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self._token = self._login(username, password)

    def _login(self, username: str, password: str) -> str:
        body = self._request("POST", "/auth/token", {"username": username, "password": password}, token=None)
        return str(body["access_token"])

    def _request(self, method: str, path: str, body: Any = None, token: str | None = "") -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        bearer = self._token if token == "" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:2000]
            raise RuntimeError(f"{method} {path} answered {error.code}: {detail}") from None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def wait_for_dag(self, dag_id: str, alive: Callable[[], None], timeout: float = 300.0) -> None:
        """Until the dag-processor has parsed ``dag_id`` (the API answers 404 before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive()
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except RuntimeError as error:
                if " 404" not in str(error):
                    raise
            time.sleep(2)
        raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f}s (see dag-processor.log)")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, run_id: str, start: datetime, end: datetime, conf: dict[str, Any]) -> None:
        """A manual run for exactly ``[start, end)``: the interval is given, not inferred."""
        body = {
            "dag_run_id": run_id,
            "logical_date": start.isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": conf,
        }
        self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def wait_for_run(
        self, dag_id: str, run_id: str, alive: Callable[[], None], timeout: float
    ) -> dict[str, Any]:
        """Poll the run until it succeeds or fails; ``alive`` raises if a component died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive()
            run: dict[str, Any] = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            time.sleep(2)
        raise TimeoutError(f"{dag_id}/{run_id} did not finish within {timeout:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones one row per map index), page by page."""
        rows: list[dict[str, Any]] = []
        while True:
            page = self.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(rows)}"
            )
            rows += page["task_instances"]
            if not page["task_instances"] or len(rows) >= page["total_entries"]:
                return rows
