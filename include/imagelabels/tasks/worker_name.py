"""The host name Airflow records for a task (``TaskInstance.hostname``), overridable per worker.

Several Celery workers on one machine would all report the same FQDN, so nobody could tell from
the metadata DB which worker ran a task. ``[core] hostname_callable =
imagelabels.tasks.worker_name.worker_hostname`` makes Airflow use ``IMAGELABELS_WORKER_NAME`` when a
worker sets it (``make test-distributed`` does) and the FQDN, as by default, otherwise.
"""

from __future__ import annotations

import socket

from imagelabels.settings import environment_value

WORKER_NAME_SETTING = "IMAGELABELS_WORKER_NAME"


def worker_hostname() -> str:
    """``IMAGELABELS_WORKER_NAME`` if set and not blank, else this machine's FQDN (Airflow's default)."""
    return environment_value(WORKER_NAME_SETTING).strip() or socket.getfqdn()
