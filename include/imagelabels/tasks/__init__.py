"""Tasks: the only layer DAG files call, and the only one that reads Airflow's context and Params.

* :mod:`.taskflow` - the shared TaskFlow pieces (batch labels, mapped results, typed context);
* :mod:`.ingestion` - task bodies of the ingestion, reconcile and relabel DAGs;
* :mod:`.reports`, :mod:`.alerts` - task bodies of the report and alert DAGs;
* :mod:`.params` - the trigger-form Params and their validation;
* :mod:`.sensors`, :mod:`.assets`, :mod:`.notify_failures`, :mod:`.worker_name` - Airflow glue.

Each DAG task is one call into this package (``tests/dags/test_task_bodies.py``); everything
else lives below it.

May import: every stage below; never devstack.
"""

from __future__ import annotations
