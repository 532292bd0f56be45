"""``python -m imagelabels``: the search CLI (:mod:`imagelabels.cli`)."""

from __future__ import annotations

import sys

from imagelabels.cli import main

if __name__ == "__main__":
    sys.exit(main())
