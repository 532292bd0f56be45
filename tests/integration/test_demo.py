"""`make demo`'s script, run as a user runs it: from nothing to printed search answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_twice_without_duplicates(tmp_path: Path) -> None:
    env = {**os.environ, "IMAGELABELS_DEMO_STATE": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stdout + first.stderr
    for expected in (
        "Documents in index 'images': 5",
        "labeler:                       local",
        "1. Images that represent '",
        "2. What does 'chelsea.png' represent? (label, confidence, parents)",
        "moderation: none",
        "with at least 90% confidence:",
        "listed 5 image(s) in 1 batch(es): 0 already indexed, 5 labeled, 5 indexed, 0 failed",
        "servers stopped",
    ):
        assert expected in first.stdout
    assert first.stdout.count("s3://demo-images/uploads/") >= 6  # 5 uploads + answers to question 1
    # real labels with their parents: the cat photo is a cat, an animal
    description = first.stdout.split("2. What does 'chelsea.png' represent?")[1].split("3. Images")[0]
    assert "Cat" in description, description
    assert "Animal" in description, description

    second = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "5 already indexed, 0 labeled, 0 indexed, 0 failed" in second.stdout, second.stdout
    assert "Documents in index 'images': 5" in second.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the demo left servers running"
