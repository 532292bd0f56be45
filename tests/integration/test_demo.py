"""`make demo`'s script, run as a user runs it: from nothing to printed search answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("engine", "banner"),
    [("elasticsearch", "noida-db (Elasticsearch):"), ("opensearch", "OpenSearch 2.19 node:")],
)
def test_demo_runs_end_to_end_twice_without_duplicates(tmp_path: Path, engine: str, banner: str) -> None:
    """`make demo` (noida-db, pip-only) and `make demo ENGINE=opensearch` (a real node)."""
    env = {**os.environ, "IMAGELABELS_DEMO_STATE": str(tmp_path)}
    command = [sys.executable, "scripts/demo.py", "--engine", engine]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    for expected in (
        banner,
        "Documents in index 'images': 5",
        "labeler:                       local",
        "1. Images that represent '",
        "2. What does 'chelsea.png' represent? (label, confidence, parents)",
        "moderation: none",
        "with at least 90% confidence:",
        "listed 5 image(s) in 1 batch(es): 0 already indexed, 5 labeled, 5 indexed, 0 failed",
        "servers stopped",
        "Running image_label_report_daily for",
        "ALERT [info] demo-cat-detected: 1 image (rule demo-cat-detected, via webhook)",
        "s3://demo-images/uploads/",
    ):
        assert expected in first.stdout
    # the report's files are printed and exist: the PDF has pages, the XLSX opens
    printed = [
        Path(line.strip())
        for line in first.stdout.splitlines()
        if "/reports/" in line and line.strip().startswith("/")
    ]
    suffixes = {path.suffix for path in printed}
    assert {".pdf", ".xlsx", ".png", ".csv"} <= suffixes, first.stdout
    assert all(path.is_file() and path.stat().st_size > 0 for path in printed)
    pdf = next(path for path in printed if path.suffix == ".pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert first.stdout.count("s3://demo-images/uploads/") >= 6  # 5 uploads + answers to question 1
    # real labels with their parents: the cat photo is a cat, an animal
    description = first.stdout.split("2. What does 'chelsea.png' represent?")[1].split("3. Images")[0]
    assert "Cat" in description, description
    assert "Animal" in description, description

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "5 already indexed, 0 labeled, 0 indexed, 0 failed" in second.stdout, second.stdout
    assert "Documents in index 'images': 5" in second.stdout
    assert "no new alert (every matching image has already alerted once)" in second.stdout
    assert "ALERT" not in second.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the demo left servers running"
