"""Ports for local servers, and a server start that loses its port to another process.

CI lost a run when moto's port, found free by ``bind(0)``, was taken before moto bound it: the
server exited with 1 and the demo failed. Ports now come from below the ephemeral range, and a
start whose log says the port was taken is tried again on another port.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from imagelabels.devstack import embedded, ports


def test_ports_are_drawn_below_the_ephemeral_range_and_are_free() -> None:
    low = ports.ephemeral_low()
    for _ in range(50):
        base = ports.free_ports(3)
        assert base >= ports.LOWEST_PORT
        assert base + 3 <= low
        assert all(ports.port_is_free(base + i) for i in range(3))


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("40000\t60999\n")
    assert ports.ephemeral_low(range_file) == 40000
    assert ports.ephemeral_low(tmp_path / "missing") == 32768  # Linux's default


def test_a_port_someone_listens_on_is_not_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not ports.port_is_free(sock.getsockname()[1])


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def test_a_server_whose_port_was_taken_starts_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", ports.free_port()))
    taken.listen()
    offered = iter([taken.getsockname()[1], ports.free_port()])
    monkeypatch.setattr(embedded, "free_port", lambda: next(offered))
    server = embedded._Server(_http_server, tmp_path / "http.log")
    try:
        first = server.spawn()
        ready = server.wait_ready(30)
        assert server.port != taken.getsockname()[1]
        assert first.poll() is not None  # the start that lost its port exited
        assert ready is server.process
        assert ready.poll() is None
        assert "Address already in use" in (tmp_path / "http.log").read_text()
    finally:
        taken.close()
        server.stop()


def test_a_server_that_fails_for_another_reason_is_not_retried_and_shows_its_log(tmp_path: Path) -> None:
    def broken(port: int) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit('no config for port {port}')"]

    server = embedded._Server(broken, tmp_path / "broken.log")
    first = server.spawn()
    with pytest.raises(embedded.ServerExited, match="no config for port") as exited:
        server.wait_ready(30)
    assert not exited.value.port_taken
    assert server.process is first  # not started again
