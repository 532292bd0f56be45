"""devstack."""

from __future__ import annotations
