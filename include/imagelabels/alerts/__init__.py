"""Alerts: rules in a versioned YAML file, evaluated against the images index, notified by email,
Slack, a webhook or the task log (in place of Skedler Alerts).

* :mod:`imagelabels.alerts.rules` - the rules file, its schema and :func:`load_rules`;
* :mod:`imagelabels.alerts.evaluate` - :func:`evaluate_rules` and :func:`mark_notified`, with
  per-image dedup and per-rule throttles kept in Elasticsearch; built from, in dependency order,
  :mod:`~imagelabels.alerts.mappings` (the indices), :mod:`~imagelabels.alerts.model` (the values
  passed around), :mod:`~imagelabels.alerts.state` (state and firing records),
  :mod:`~imagelabels.alerts.queries` (measuring a rule), :mod:`~imagelabels.alerts.messages`
  (the texts) and :mod:`~imagelabels.alerts.firing` (recording what fires);
* :mod:`imagelabels.alerts.notify` - :func:`send_notification` over the project's channels.

No module here imports Airflow; the channels do, inside the functions that send. May import:
documents, engine, search, channels, settings. The task body is :mod:`imagelabels.tasks.alerts`.
"""

from __future__ import annotations
