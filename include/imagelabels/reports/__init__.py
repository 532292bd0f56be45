"""Scheduled label reports (in place of Skedler): aggregate, render, deliver.

* :mod:`.model` - the report's data (tables with typed columns), independent of any format;
* :mod:`.aggregations` - one interval's figures, computed with Elasticsearch aggregations that
  both Elasticsearch 8 and noida-db answer;
* :mod:`.render` - CSV, XLSX, PNG charts and PDF from a :class:`~.model.Report`;
* :mod:`.config` - which reports exist and where each one is delivered;
* :mod:`.formatting` - how values read in every format (imported by render and each format);
* :mod:`.delivery` - the channels (S3, email, Slack, webhook), independent of each other.
* :mod:`.links` - links to stored report files that never expire (the Image search page's
  ``api/reports`` route), where the UI's base URL is known.

May import: documents, engine, search, channels, settings, and alerts (a report shows rule values
the way alerts do). The task bodies that run a report are in :mod:`imagelabels.tasks.reports`.
"""
