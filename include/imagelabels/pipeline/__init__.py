"""Pipeline: the jobs, in plain Python with explicit arguments (no Airflow imports).

* :mod:`.batch` - one batch: read, preflight, label, index, every image accounted;
* :mod:`.ingest` - list an interval (or the failed keys) into manifests;
* :mod:`.event_ingest` - the same from SQS events, deletes included;
* :mod:`.reconcile` - bring index and bucket back into agreement, streaming;
* :mod:`.relabel` - label again what was labeled with other settings.

May import: every stage below (sources, preflight, labelers, engine, search) and clients.
Nothing above: reports and alerts read what the pipeline wrote, through the engine.
"""

from __future__ import annotations
