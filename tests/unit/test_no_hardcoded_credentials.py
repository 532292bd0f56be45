"""Credentials come from Airflow connections or the secrets backend, never from code.

Scans include/, dags/ and plugins/ for AWS key ids, secret-key/password/token literals and
``user:password@`` URLs. The only literals allowed are the stand-in keys for the local moto
server, listed below with the reason; anything else found here is a bug.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("include", "dags", "plugins")
SUFFIXES = {".py", ".js", ".html", ".yaml", ".yml", ".json", ".cfg", ".toml", ".md"}
PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key literal": re.compile(r"aws_secret_access_key['\"]?\s*[:=]\s*['\"][^'\"]+['\"]", re.I),
    "secret literal": re.compile(
        r"\b\w*(?:password|passwd|secret|token|api_key|apikey)\w*['\"]?\s*[:=]\s*['\"][^'\"{}\s]{3,}['\"]",
        re.I,
    ),
    "credentials in a URL": re.compile(r"://[^/\s:@'\"`]+:[^/\s@'\"`]+@"),
}
# (file, the matched text) -> why it is not a credential
ALLOWED = {
    ("include/imagelabels/devstack/standin/__init__.py", 'aws_secret_access_key="testing"'): (
        "the Rekognition stand-in's client for the local moto server, which accepts any key"
    ),
    ("include/imagelabels/cli.py", "://user:pass@"): "documentation of the --es-url format",
}


def findings() -> list[tuple[str, int, str, str]]:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or path.suffix not in SUFFIXES:
                continue
            relative = path.relative_to(ROOT).as_posix()
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for what, pattern in PATTERNS.items():
                    for match in pattern.finditer(line):
                        if (relative, match.group(0)) not in ALLOWED:
                            found.append((relative, number, what, match.group(0)))
    return found


def test_no_hard_coded_credentials() -> None:
    assert findings() == []


def test_the_patterns_find_what_they_must_find() -> None:
    """Each pattern matches a typical leak (so the scan above cannot pass by matching nothing)."""
    samples = {
        "AWS access key id": "key = 'AKIAIOSFODNN7EXAMPLE'",
        "AWS secret key literal": 'boto3.client("s3", aws_secret_access_key="wJalrXUtnFEMI")',
        "secret literal": 'Elasticsearch(url, basic_auth=("elastic", "x"), password="changeme")',
        "credentials in a URL": "es = Elasticsearch('https://elastic:changeme@es:9200')",
    }
    for what, sample in samples.items():
        assert PATTERNS[what].search(sample), what
    assert not PATTERNS["secret literal"].search("password=conn.password")


def test_the_allowed_literals_still_exist() -> None:
    """An allowlist entry whose code is gone must be removed, not kept as a silent exemption."""
    for (relative, text), _why in ALLOWED.items():
        assert text in (ROOT / relative).read_text(encoding="utf-8"), relative
