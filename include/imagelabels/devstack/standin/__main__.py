"""``python -m imagelabels.devstack.standin [flags]``: run the stand-in in the foreground.

It prints one line, ``imagelabels-standin ready http://HOST:PORT``, once it accepts requests
(what :func:`~imagelabels.devstack.standin.process.start_standin_process` waits for), and exits cleanly on
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from contextlib import suppress
from types import FrameType

from imagelabels.devstack.standin.config import parse_args
from imagelabels.devstack.standin.process import READY_PREFIX
from imagelabels.devstack.standin.server import StandInServer


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, bind, announce readiness, serve until terminated."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    config = parse_args(argv)
    server = StandInServer(config)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    print(f"{READY_PREFIX}{server.url}", flush=True)
    with suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
