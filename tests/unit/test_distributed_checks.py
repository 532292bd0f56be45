"""The distributed run's log check finds a leaked secret (raw or URL-encoded) and refuses to pass
when there is no task log to search."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from distributed.workload import Verdict  # noqa: E402
from distributed_run import check_no_secrets_in_logs  # noqa: E402

SECRET = "es-pass/abc+="


def _task_log(folder: Path, text: str) -> None:
    log = folder / "dag_id=d" / "run_id=r" / "task_id=label_and_index" / "map_index=0" / "attempt=1.log"
    log.parent.mkdir(parents=True)
    log.write_text(text)


def test_clean_logs_pass(tmp_path: Path) -> None:
    _task_log(tmp_path, '{"event": "labeled 50 images", "password": "***"}')
    verdict = Verdict()
    check_no_secrets_in_logs(verdict, [tmp_path], [SECRET])
    assert verdict.problems == []


def test_a_url_encoded_secret_in_any_log_fails(tmp_path: Path) -> None:
    _task_log(tmp_path, '{"event": "labeled 50 images"}')
    (tmp_path / "worker1.log").write_text("GET http://imagelabels:es-pass%2Fabc%2B%3D@127.0.0.1:9200/")
    verdict = Verdict()
    check_no_secrets_in_logs(verdict, [tmp_path], [SECRET])
    assert verdict.problems == [f"a connection secret appears in {tmp_path / 'worker1.log'}"]


def test_no_task_log_is_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "scheduler.log").write_text("nothing here")
    verdict = Verdict()
    check_no_secrets_in_logs(verdict, [tmp_path], [SECRET])
    assert any("no task log" in problem for problem in verdict.problems)
