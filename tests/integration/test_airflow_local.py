"""`make airflow` for real: scripts/airflow_local.py starts the api-server, scheduler,
dag-processor and triggerer (LocalExecutor, SQLite) on the embedded stack. Started once for the
module; each test looks at one promise of it, through the REST API as the UI does:

* the first run (the one it starts for the sample photographs) indexes them;
* a run triggered from the UI is executed, and its ``summarize`` task log shows the totals;
* nothing it started listens on a non-loopback address, and the UI answers on 127.0.0.1;
* ``make backfill`` creates a backfill through the running api-server (and says that
  ``make airflow`` must run when it does not);
* in headless Chromium, signed in on the login page, the Trigger form of every Dag with nullable
  Params and the hourly Dag's Backfill form submit with those Params left empty (none is marked
  required), and what they create takes them as null (the settings).
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagelabels.devstack.embedded import covering_hours
from imagelabels.devstack.ports import free_port
from imagelabels.engine.elastic import connect as elasticsearch_engine
from tests.ui.test_image_search_page import Browser, _chromium

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "image_ingest_s3_hourly"
USER, PASSWORD = "admin", "admin"  # make airflow's loopback login


def _api(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _read_until_ready(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen += lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, f"make airflow exited early:\n{seen}"
            continue
        if "Airflow is ready" in seen:
            return seen
    raise AssertionError(f"Airflow was not ready in {timeout}s:\n{seen}")


@dataclass
class LocalAirflow:
    process: subprocess.Popen[str]
    state: Path
    api: str
    banner: str
    token: str
    moto_url: str
    es_url: str
    finished: dict[str, dict] = field(default_factory=dict)

    @property
    def dag(self) -> str:
        return f"{self.api}/api/v2/dags/{DAG_ID}"

    def run_url(self, run_id: str) -> str:
        return f"{self.dag}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict:
        if run_id not in self.finished:
            run, deadline = {"state": "queued"}, time.monotonic() + timeout
            while run["state"] not in ("success", "failed") and time.monotonic() < deadline:
                time.sleep(2)
                run = _api(self.run_url(run_id), self.token)
            self.finished[run_id] = run
        return self.finished[run_id]

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    state = tmp_path_factory.mktemp("make-airflow")
    port = free_port()
    env = {**os.environ, "IMAGELABELS_DEMO_STATE": str(state)}
    process = subprocess.Popen(
        [sys.executable, "scripts/airflow_local.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    urls = [api]
    try:
        banner = _read_until_ready(process, timeout=300)
        moto_url = re.search(r"moto server \(S3, Rekognition\): (\S+)", banner).group(1)  # type: ignore[union-attr]
        es_url = re.search(r"noida-db \(Elasticsearch\):\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        urls += [moto_url, es_url]
        token = _api(f"{api}/auth/token", method="POST", body={"username": USER, "password": PASSWORD})[
            "access_token"
        ]
        yield LocalAirflow(process, state, api, banner, token, moto_url, es_url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    for url in urls:  # Ctrl-C (SIGTERM) stops Airflow and both servers
        host, port_text = url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port_text))) != 0, f"{url} still answers after Ctrl-C"
    assert not (state / "airflow-local.json").exists(), "the address file outlived make airflow"


def test_first_run_indexes_the_sample_photos(local_airflow: LocalAirflow) -> None:
    """A new user's first look: the run make airflow starts for the uploads (its URL printed)
    indexes the five sample photographs; the hourly DAG's own trigger would list the previous
    complete hour, where nothing was uploaded."""
    found = re.search(rf"{re.escape(local_airflow.api)}/dags/{DAG_ID}/runs/(\S+)", local_airflow.banner)
    assert found, f"no sample run URL in the banner:\n{local_airflow.banner}"
    run_id = found.group(1)
    run = local_airflow.wait_for_run(run_id)
    assert run["state"] == "success", run
    uploads = local_airflow.s3().list_objects_v2(Bucket="demo-images", Prefix="uploads/")["Contents"]
    hours = covering_hours([item["LastModified"] for item in uploads])
    assert datetime.fromisoformat(run["data_interval_start"]) <= hours[0]
    assert datetime.fromisoformat(run["data_interval_end"]) >= hours[-1] + timedelta(hours=1)

    tasks = _api(f"{local_airflow.run_url(run_id)}/taskInstances", local_airflow.token)["task_instances"]
    mapped = [t for t in tasks if t["task_id"] == "label_and_index"]
    assert [t["rendered_map_index"] for t in mapped] == ["batch-00001.jsonl (5 keys)"]
    es = elasticsearch_engine(local_airflow.es_url)
    assert es.count(index="images")["count"] == 5
    run_ids = {hit["_source"]["airflow"]["run_id"] for hit in es.search(index="images")["hits"]["hits"]}
    assert run_ids == {run_id}


def test_ui_triggered_run_is_executed_and_its_summarize_log_has_the_totals(
    local_airflow: LocalAirflow,
) -> None:
    """Trigger as the UI form does (an explicit data interval over the uploads); the scheduler
    executes it, and the ``summarize`` task log, read through the REST API as the UI reads it
    (without the log servers: the api-server reads the local files), shows the run's totals."""
    uploads = local_airflow.s3().list_objects_v2(Bucket="demo-images", Prefix="uploads/")["Contents"]
    hours = covering_hours([item["LastModified"] for item in uploads])
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    _api(local_airflow.dag, local_airflow.token, "PATCH", {"is_paused": False})
    _api(
        f"{local_airflow.dag}/dagRuns",
        local_airflow.token,
        "POST",
        {
            "dag_run_id": "from_the_ui",
            "logical_date": datetime.now(UTC).isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": {},
        },
    )
    assert local_airflow.wait_for_run("from_the_ui")["state"] == "success"
    totals = _api(
        f"{local_airflow.run_url('from_the_ui')}/taskInstances/summarize/xcomEntries/return_value",
        local_airflow.token,
    )["value"]
    assert totals["listed"] == 5, totals
    assert totals["labeled"] + totals["already_indexed"] == 5, totals  # the first run may be done

    log = _api(
        f"{local_airflow.run_url('from_the_ui')}/taskInstances/summarize/logs/1?full_content=true",
        local_airflow.token,
    )
    events = [entry.get("event", "") if isinstance(entry, dict) else str(entry) for entry in log["content"]]
    text = "\n".join(events)
    assert "run totals:" in text, f"no totals in the summarize log:\n{text}"
    assert "'listed': 5" in text, text
    assert "Could not read served logs" not in text, text  # a finished task: local files only


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(port, 16)


def _listening_sockets(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """(pid, command, address, port) of every TCP socket in LISTEN state that ``pids`` hold."""
    owners: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with_inode = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if with_inode:
                    owners[with_inode.group(1)] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owners:  # 0A: LISTEN
                pid = owners[fields[9]]
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    command = "?"
                found.append((pid, command.strip(), *_address(fields[1])))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_nothing_listens_beyond_loopback(local_airflow: LocalAirflow) -> None:
    """Every process make airflow started (api-server and its workers, scheduler, dag-processor,
    triggerer, task processes, moto, noida-db) listens on loopback only: no serve-logs on
    0.0.0.0:8793/8794. Checked for a while, after runs have executed, so late starters count."""
    with urllib.request.urlopen(f"{local_airflow.api}/api/v2/version", timeout=10) as response:
        assert response.status == 200  # the UI answers on 127.0.0.1
    api_port = int(local_airflow.api.rsplit(":", 1)[1])
    deadline, seen = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        seen = _listening_sockets(_descendants(local_airflow.process.pid))
        exposed = [entry for entry in seen if not _is_loopback(entry[2])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        time.sleep(1)
    assert ("127.0.0.1", api_port) in {(address, port) for _, _, address, port in seen}, seen


def test_make_backfill_creates_the_runs_through_the_running_api_server(local_airflow: LocalAirflow) -> None:
    """`make backfill FROM=... TO=...` with make airflow running: the backfill is created through
    the api-server (no second SQLite writer: no 'database is locked'), one run per hour."""
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = subprocess.run(
        ["make", "--no-print-directory", "backfill", f"FROM={day}T00:00", f"TO={day}T02:00", f"DAG={DAG_ID}"],
        cwd=ROOT,
        env={**os.environ, "IMAGELABELS_DEMO_STATE": str(local_airflow.state)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database is locked" not in result.stdout + result.stderr
    assert re.search(r"backfill \d+ of image_ingest_s3_hourly", result.stdout), result.stdout
    assert f"{local_airflow.api}/dags/{DAG_ID}" in result.stdout  # where to watch it

    runs = [  # of that day: the Backfill form's test makes others
        run
        for run in _api(f"{local_airflow.dag}/dagRuns?run_type=backfill&limit=100", local_airflow.token)[
            "dag_runs"
        ]
        if run["logical_date"].startswith(day)
    ]
    mine = sorted(run["logical_date"] for run in runs)
    assert [datetime.fromisoformat(date).strftime("%H:%M") for date in mine] == ["00:00", "01:00", "02:00"]
    assert not [run for run in runs if run["state"] == "failed"], runs


def test_make_backfill_says_make_airflow_must_run_first(tmp_path: Path) -> None:
    """Without a running make airflow it fails with a clear message (never a SQLite lock)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "backfill", "FROM=2026-11-01T00:00", "TO=2026-11-01T03:00"],
        cwd=ROOT,
        env={**os.environ, "IMAGELABELS_DEMO_STATE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "make airflow" in result.stdout + result.stderr
    assert "is not running" in result.stdout + result.stderr


# --- the trigger and backfill forms of Airflow's UI, in headless Chromium --------------------
#
# The forms mark a Param required when its type does not allow null, and keep Trigger / Run
# Backfill disabled while a required Param is null or "". Text Params that mean "use the setting"
# when empty are therefore nullable (imagelabels.tasks.params); these tests leave them empty in the real
# forms, submit, and look at what was created through the REST API.

DAGS_WITH_NULLABLE_PARAMS = {
    DAG_ID: ["bucket", "prefix", "labeler", "max_cost"],
    "image_reconcile_daily": ["bucket", "prefix", "labeler"],
    "image_ingest_sqs": ["queue_url", "bucket", "prefix", "labeler", "max_cost"],
    "image_relabel": ["bucket", "prefix", "since", "until", "labeler", "label_model_version", "max_cost"],
    "image_label_alerts": ["rules_file"],
}
SCREENSHOTS = ROOT / "tests" / "ui" / "screenshots"  # git-ignored
DIALOG = "document.querySelector('[data-scope=dialog][data-part=content]')"
DATE_POPOVER = (
    "[...document.querySelectorAll('[data-scope=popover][data-part=content]')]"
    ".find(e => !e.hidden && !!e.querySelector('input[placeholder=\"YYYY/MM/DD\"]'))"
)
UI_WAIT = 120  # seconds; generous: the machine runs the scheduler's tasks at the same time


def _params_of(local_airflow: LocalAirflow, dag_id: str) -> dict[str, dict]:
    return _api(f"{local_airflow.api}/api/v2/dags/{dag_id}/details", local_airflow.token)["params"]  # type: ignore[no-any-return]


def _blocks_the_forms(param: dict) -> bool:
    """The UI's rule: a Param whose type does not allow null is required, and a required Param
    that is null or "" keeps the form from being submitted."""
    kind = param["schema"].get("type")
    required = bool(kind) and not (isinstance(kind, list) and "null" in kind)
    return required and param["value"] in (None, "")


def test_no_dag_has_a_param_that_blocks_the_forms_when_left_empty(local_airflow: LocalAirflow) -> None:
    """Every Dag's Params as the api-server gives them to the forms: none is both required and
    empty by default, and every Param that is empty by default says what empty means."""
    deadline = time.monotonic() + UI_WAIT
    while True:  # the dag-processor parses every file; wait until all Dags are there
        dags = {
            d["dag_id"]
            for d in _api(f"{local_airflow.api}/api/v2/dags?limit=100", local_airflow.token)["dags"]
        }
        if set(DAGS_WITH_NULLABLE_PARAMS) <= dags or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(DAGS_WITH_NULLABLE_PARAMS) <= dags, dags
    nullable: dict[str, list[str]] = {}
    for dag_id in sorted(dags):
        params = _params_of(local_airflow, dag_id)
        blocking = [name for name, param in params.items() if _blocks_the_forms(param)]
        assert not blocking, f"{dag_id}: required Params that are empty by default: {blocking}"
        empty = [name for name, param in params.items() if param["value"] is None]
        for name in empty:
            assert "empty" in (params[name]["description"] or "").lower(), (
                f"{dag_id}.{name}: the description does not say what empty means"
            )
        if empty:
            nullable[dag_id] = sorted(empty)
    # a new Dag (or Param) of this kind is added to the browser tests below
    assert nullable == {dag_id: sorted(names) for dag_id, names in DAGS_WITH_NULLABLE_PARAMS.items()}


@pytest.fixture(scope="module")
def airflow_ui(local_airflow: LocalAirflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium signed in to the UI of make airflow, on the simple auth manager's login
    page (admin/admin, as make airflow prints), once for the module."""
    binary = _chromium()
    if binary is None:
        pytest.fail("no chromium on PATH: run scripts/setup_system.sh (Debian: apt-get install chromium)")
    browser = Browser(binary, tmp_path_factory.mktemp("chromium") / "profile")
    try:
        # the UI shows UTC (its default); the browser's own zone must not shift typed dates either
        browser.send("Emulation.setTimezoneOverride", timezoneId="UTC")
        browser.goto(f"{local_airflow.api}/dags")
        browser.wait(
            "location.pathname.startsWith('/auth/login') && document.querySelectorAll('input').length >= 2",
            UI_WAIT,
            "the login page",
        )
        browser.type_into("input[name=username], input:not([type=password])", USER)
        browser.type_into("input[type=password]", PASSWORD)
        browser.eval("document.querySelector('button[type=submit]').click()")
        browser.wait("location.pathname === '/dags'", UI_WAIT, "the Dags page after the login")
        yield browser
    finally:
        browser.close()


def _dialog_text(ui: Browser) -> str:
    return ui.eval(f"{DIALOG} ? {DIALOG}.innerText : '(no dialog open)'")  # type: ignore[no-any-return]


def _wait(ui: Browser, expression: str, what: str) -> Any:
    try:
        return ui.wait(expression, UI_WAIT, what)
    except AssertionError as error:
        raise AssertionError(
            f"{error}; at {ui.eval('location.href')}, the dialog says:\n{_dialog_text(ui)}"
        ) from None


def _open_trigger_form(ui: Browser, api: str, dag_id: str) -> None:
    ui.goto(f"{api}/dags/{dag_id}")
    button = "document.querySelector('button[aria-label=\"Trigger Dag\"]')"
    _wait(ui, f"location.pathname === '/dags/{dag_id}' && !!{button}", f"the Trigger button of {dag_id}")
    ui.eval(f"{button}.click()")
    _wait(
        ui,
        f"!!{DIALOG} && {DIALOG}.innerText.includes({json.dumps(dag_id)})"
        f" && !!{DIALOG}.querySelector('[name^=element_]')",
        f"the trigger form of {dag_id} with its Params",
    )


def _submit_button(label: str) -> str:
    return f"[...{DIALOG}.querySelectorAll('button')].find(b => b.innerText.trim() === {json.dumps(label)})"


def _check_empty_and_not_required(ui: Browser, names: list[str]) -> None:
    """The nullable Params are shown empty, none is marked required, nothing says 'required'."""
    fields = ui.eval(
        f"""(() => {{
        const out = {{}};
        for (const name of {json.dumps(names)}) {{
            const input = {DIALOG}.querySelector(`[name="element_${{name}}"]`);
            const root = input && input.closest('[data-scope=field][data-part=root]');
            out[name] = input ? {{
                value: input.value,
                required: !!(root && root.querySelector('label[data-required]')) || input.required,
                invalid: !!(root && root.hasAttribute('data-invalid')),
            }} : null;
        }}
        return out;
        }})()"""
    )
    problems = []
    for name in names:
        field = fields[name]
        if field is None:
            problems.append(f"{name}: not in the form")
        elif field["required"] or field["invalid"]:
            problems.append(f"{name}: marked required/invalid")
        elif field["value"] not in ("", "__null__"):  # a select's empty choice is __null__
            problems.append(f"{name}: not empty but {field['value']!r}")
    if "This field is required" in _dialog_text(ui):
        problems.append("the form says 'This field is required'")
    assert not problems, f"{problems}; the dialog says:\n{_dialog_text(ui)}"


def _submit(ui: Browser, label: str, screenshot: str) -> None:
    ui.screenshot(SCREENSHOTS / screenshot)  # what the form looked like, should it not submit
    _wait(ui, f"!!{_submit_button(label)} && !{_submit_button(label)}.disabled", f"{label} to be enabled")
    ui.eval(f"{_submit_button(label)}.click()")


def _run_conf_leaves_empty(conf: dict | None, names: list[str]) -> None:
    given = {name: (conf or {}).get(name) for name in names}
    assert given == dict.fromkeys(names), f"Params given a value: {given}"


def test_trigger_form_submits_with_the_nullable_params_empty(
    local_airflow: LocalAirflow, airflow_ui: Browser
) -> None:
    """The hourly Dag's Trigger form, bucket, prefix, labeler and max_cost left empty: Trigger
    is enabled, the run is created with them null, and it succeeds on the settings."""
    names = DAGS_WITH_NULLABLE_PARAMS[DAG_ID]
    _open_trigger_form(airflow_ui, local_airflow.api, DAG_ID)
    _check_empty_and_not_required(airflow_ui, names)
    _submit(airflow_ui, "Trigger", f"trigger-form-empty-params-{DAG_ID}.png")
    run_page = _wait(
        airflow_ui,
        f"location.pathname.startsWith('/dags/{DAG_ID}/runs/') && location.pathname",
        "the page of the triggered run",
    )
    run_id = urllib.parse.unquote(run_page.split("/runs/", 1)[1])
    run = _api(local_airflow.run_url(run_id), local_airflow.token)
    assert run["run_type"] == "manual", run
    _run_conf_leaves_empty(run["conf"], names)
    assert local_airflow.wait_for_run(run_id)["state"] == "success"  # empty: IMAGELABELS_BUCKET


@pytest.mark.parametrize("dag_id", sorted(set(DAGS_WITH_NULLABLE_PARAMS) - {DAG_ID}))
def test_other_trigger_forms_submit_with_the_nullable_params_empty(
    local_airflow: LocalAirflow, airflow_ui: Browser, dag_id: str
) -> None:
    """Each other Dag with nullable Params: its Trigger form submits with them empty. The Dag
    stays paused ('Unpause on trigger' unchecked): the run is created, queued, not executed."""
    names = DAGS_WITH_NULLABLE_PARAMS[dag_id]
    dag_url = f"{local_airflow.api}/api/v2/dags/{dag_id}"
    assert _api(dag_url, local_airflow.token)["is_paused"], f"{dag_id} is not paused"
    _open_trigger_form(airflow_ui, local_airflow.api, dag_id)
    _check_empty_and_not_required(airflow_ui, names)
    unpause = f"[...{DIALOG}.querySelectorAll('label')].find(l => l.innerText.includes('Unpause'))"
    _wait(airflow_ui, f"!!{unpause}", "the 'Unpause on trigger' box")
    if airflow_ui.eval(f"{unpause}.querySelector('input').checked"):
        airflow_ui.eval(f"{unpause}.click()")
    _wait(airflow_ui, f"!{unpause}.querySelector('input').checked", "'Unpause on trigger' to be unchecked")
    _submit(airflow_ui, "Trigger", f"trigger-form-empty-params-{dag_id}.png")
    run_page = _wait(
        airflow_ui,
        f"location.pathname.startsWith('/dags/{dag_id}/runs/') && location.pathname",
        f"the page of the triggered {dag_id} run",
    )
    run_id = urllib.parse.unquote(run_page.split("/runs/", 1)[1])
    run = _api(f"{dag_url}/dagRuns/{urllib.parse.quote(run_id, safe='')}", local_airflow.token)
    assert (run["run_type"], run["state"]) == ("manual", "queued"), run
    _run_conf_leaves_empty(run["conf"], names)
    assert _api(dag_url, local_airflow.token)["is_paused"], f"{dag_id} was unpaused"


def _pick_date(ui: Browser, index: int, when: datetime) -> None:
    """Type a date and a time into the index-th date-time picker of the form (UTC, the UI's default)."""
    ui.eval(f"{DIALOG}.querySelectorAll('[data-testid=datetime-input]')[{index}].click()")
    _wait(ui, f"!!{DATE_POPOVER}", "the date-time picker")
    for placeholder, text in (("YYYY/MM/DD", f"{when:%Y/%m/%d}"), ("HH:mm", f"{when:%H:%M}")):
        ui.eval(
            f"{{ const e = {DATE_POPOVER}.querySelector('input[placeholder=\"{placeholder}\"]'); e.focus(); e.select() }}"
        )
        ui.send("Input.insertText", text=text)
    shown = f"{when:%b %d, %Y %H:%M}"
    picker = f"{DIALOG}.querySelectorAll('[data-testid=datetime-input]')[{index}]"
    _wait(ui, f"{picker}.innerText.trim() === {json.dumps(shown)}", f"the picker to show {shown}")
    if ui.eval(f"!!{DATE_POPOVER}"):  # close the picker (Escape closes the top layer only)
        for kind in ("keyDown", "keyUp"):
            ui.send(
                "Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27
            )
    _wait(ui, f"!{DATE_POPOVER} && !!{DIALOG}", "the picker to close")


def test_backfill_form_submits_with_the_nullable_params_empty(
    local_airflow: LocalAirflow, airflow_ui: Browser
) -> None:
    """The hourly Dag's Backfill form (the trigger dialog's Backfill choice) over two hours, its
    nullable Params left empty: Run Backfill is enabled, the backfill is created, its runs take
    no bucket, prefix or labeler and succeed on the settings."""
    names = DAGS_WITH_NULLABLE_PARAMS[DAG_ID]
    backfills_url = f"{local_airflow.api}/api/v2/backfills?dag_id={DAG_ID}&limit=100"
    deadline = time.monotonic() + 300
    while True:  # one active backfill per Dag: let make backfill's (an earlier test) finish
        backfills = _api(backfills_url, local_airflow.token)["backfills"]
        if all(b["completed_at"] for b in backfills) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(b["completed_at"] for b in backfills), f"a backfill is still active: {backfills}"
    known = {b["id"] for b in backfills}
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)

    _open_trigger_form(airflow_ui, local_airflow.api, DAG_ID)
    airflow_ui.eval(f"{DIALOG}.querySelector('input[type=radio][value=backfill]').click()")
    _wait(airflow_ui, f"{DIALOG}.innerText.includes('Run Backfill - ')", "the Backfill form")
    _pick_date(airflow_ui, 0, day)
    _pick_date(airflow_ui, 1, day + timedelta(hours=1))
    _wait(airflow_ui, f"{DIALOG}.innerText.includes('2 runs will be triggered.')", "the dry run's count")
    _check_empty_and_not_required(airflow_ui, names)
    _submit(airflow_ui, "Run Backfill", "backfill-form-empty-params.png")
    _wait(airflow_ui, f"!{DIALOG}", "the Backfill form to close")

    deadline = time.monotonic() + 60
    while True:
        created = [b for b in _api(backfills_url, local_airflow.token)["backfills"] if b["id"] not in known]
        if created or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(created) == 1, f"no backfill created by the form: {created}"
    [backfill] = created
    assert datetime.fromisoformat(backfill["from_date"]) == day, backfill
    assert datetime.fromisoformat(backfill["to_date"]) == day + timedelta(hours=1), backfill
    _run_conf_leaves_empty(backfill["dag_run_conf"], names)

    deadline = time.monotonic() + 300
    while True:
        backfill = _api(f"{local_airflow.api}/api/v2/backfills/{backfill['id']}", local_airflow.token)
        if backfill["completed_at"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    runs = [
        run
        for run in _api(f"{local_airflow.dag}/dagRuns?run_type=backfill&limit=100", local_airflow.token)[
            "dag_runs"
        ]
        if datetime.fromisoformat(run["logical_date"]).date() == day.date()
    ]
    assert sorted(datetime.fromisoformat(run["logical_date"]) for run in runs) == [
        day,
        day + timedelta(hours=1),
    ], runs
    for run in runs:
        _run_conf_leaves_empty(run["conf"], names)
    assert backfill["completed_at"], f"the backfill did not finish: {backfill}"
    assert [run["state"] for run in runs] == ["success", "success"], runs  # empty: the settings
