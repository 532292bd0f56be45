"""preflight."""

from __future__ import annotations
