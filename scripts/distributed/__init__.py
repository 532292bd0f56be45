"""Helpers of scripts/distributed_run.py (``make test-distributed``)."""
