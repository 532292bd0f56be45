"""Loopback ports for the servers the devstack, the tests and the distributed run start.

Ports are drawn *below* the kernel's ephemeral range. A port that ``bind(0)`` reports free lies
inside that range, and between the check and the server's own ``bind`` the kernel may hand it to
any process's outgoing connection (the test suite opens thousands): the server then exits with
"Address already in use". CI lost a run to exactly that (moto exited with 1 at start-up).
Standard library only: :mod:`imagelabels.devstack.opensearch_node` imports it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 20000
"""Below this, ports are the well-known services' and the ones people configure by hand."""


def port_is_free(port: int) -> bool:
    """Whether a listening socket could bind ``127.0.0.1:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ephemeral_low(range_file: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """Where the kernel starts handing out ports for ``bind(0)`` and outgoing connections."""
    try:
        return int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports that are all free now (port P+i for i < count)."""
    low, high = LOWEST_PORT, ephemeral_low() - count
    for _ in range(200):
        if high > low:
            base = random.randrange(low, high)
        else:  # an unusual port range: take what the kernel gives
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                base = int(sock.getsockname()[1])
        if base + count - 1 <= 65535 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free loopback ports")


def free_port() -> int:
    """One loopback port that nothing listens on now, outside the ephemeral range."""
    return free_ports(1)
