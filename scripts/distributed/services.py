"""PostgreSQL and Redis for the distributed run: reach them (start them if they are down), give
each run a fresh database and a Redis DB number of its own, and clean both up afterwards.

Both are shared with whoever else uses this machine, so a run only ever drops the database it
created and flushes the Redis DB it claimed.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

PG_HOST, PG_PORT, PG_ADMIN = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "imagelabels:distributed:claimed-by"  # marks a Redis DB as taken by one run


def _pg_listening() -> bool:
    """A TCP connect only: whether the server is up says nothing about who may log in."""
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=5):
            return True
    except OSError:
        return False


def _as_postgres_os_user() -> list[str] | None:
    """The prefix that runs a command as the ``postgres`` OS user, or None where that is not
    possible. Debian's ``pg_hba.conf`` lets that user in over the local socket (``peer``) and asks
    every TCP client for a password (``scram-sha-256``), so administration goes this way."""
    try:
        pwd.getpwnam(PG_ADMIN)
    except KeyError:
        return None
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", PG_ADMIN, "--"]
    if shutil.which("sudo"):
        return ["sudo", "-n", "-u", PG_ADMIN, "--"]
    return None


def _admin_sql(statement: str) -> None:
    """Run one SQL statement as the superuser: ``psql`` over the local socket as the ``postgres``
    OS user where possible, else psycopg2 over TCP as ``postgres`` (a server set to ``trust``).
    Raises with the server's own message, so an authentication problem is not read as "down"."""
    prefix = _as_postgres_os_user()
    if prefix is not None and shutil.which("psql"):
        completed = subprocess.run(
            [*prefix, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", statement],
            capture_output=True,
            text=True,
            cwd="/",  # the postgres user may not read the caller's working directory
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"psql as {PG_ADMIN} failed: {completed.stderr.strip() or completed.stdout.strip()}"
            )
        return
    import psycopg2

    connection = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_ADMIN, dbname="postgres", connect_timeout=5
    )
    connection.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _pg_ready() -> bool:
    """Listening and answering queries (a starting server accepts TCP before it takes logins)."""
    if not _pg_listening():
        return False
    try:
        _admin_sql("SELECT 1")
    except Exception:
        return False
    return True


def _redis() -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5, socket_connect_timeout=5)


def _redis_reachable() -> bool:
    try:
        return bool(_redis().ping())
    except Exception:
        return False


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise RuntimeError(f"{what} is still unreachable {timeout:.0f}s after starting it")


def _start_postgres() -> None:
    """Start the Debian cluster(s) (``pg_ctlcluster``), else the service; CI images have the
    packages but not always a running server."""
    if shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster"):
        listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3] != "online":
                subprocess.run(["pg_ctlcluster", fields[0], fields[1], "start"], check=False)
    if not _pg_listening() and shutil.which("service"):
        subprocess.run(["service", "postgresql", "start"], check=False)


def _start_redis() -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("Redis is not reachable on 127.0.0.1:6379 and redis-server is not installed")
    subprocess.run(
        [server, "--daemonize", "yes", "--bind", REDIS_HOST, "--port", str(REDIS_PORT)], check=False
    )


def ensure_services() -> None:
    """Make PostgreSQL and Redis reachable, starting them if needed (never skipping the test)."""
    if not _pg_listening():
        print(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}: starting it", flush=True)
        _start_postgres()
        _wait(_pg_listening, "PostgreSQL")
    try:
        _wait(_pg_ready, "PostgreSQL (answering queries)", timeout=30.0)
    except RuntimeError:
        _admin_sql("SELECT 1")  # raises with the server's own reason (e.g. a refused login)
        raise
    if not _redis_reachable():
        print(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}: starting it", flush=True)
        _start_redis()
        _wait(_redis_reachable, "Redis")


@dataclass(frozen=True)
class RunDatabase:
    """A database and a login role of the same name, both this run's own: the role has a random
    password (TCP logins need one under Debian's defaults) and owns the database."""

    name: str
    password: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL with the psycopg2 driver named: SQLAlchemy 2.1 maps a bare
        ``postgresql://`` to psycopg 3, which is not installed. The password is URL-safe."""
        return f"postgresql+psycopg2://{self.name}:{self.password}@{PG_HOST}:{PG_PORT}/{self.name}"


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        raise ValueError(f"not a safe PostgreSQL name for a run: {name!r}")
    return f'"{name}"'


def create_database(name: str) -> RunDatabase:
    """A fresh, empty metadata database for this run (never reuse one: stale runs and TIs would
    leak into the assertions), owned by a login role made for it."""
    database = RunDatabase(name, secrets.token_urlsafe(24))
    quoted = _identifier(name)
    _admin_sql(f"CREATE ROLE {quoted} LOGIN PASSWORD '{database.password}'")
    _admin_sql(f"CREATE DATABASE {quoted} OWNER {quoted}")
    return database


def drop_database(name: str) -> None:
    """Drop this run's database and role, first ending sessions a killed process left behind."""
    quoted = _identifier(name)
    _admin_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    _admin_sql(f"DROP DATABASE IF EXISTS {quoted}")
    _admin_sql(f"DROP ROLE IF EXISTS {quoted}")


@dataclass(frozen=True)
class RedisDb:
    """A Redis DB number claimed by this run (broker and shared rate limiter)."""

    number: int

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.number}"

    def release(self) -> None:
        """Flush the DB: Celery's queues, results and our rate-limiter keys go with it."""
        import redis

        redis.Redis.from_url(self.url, socket_timeout=5).flushdb()


def claim_redis_db(owner: str) -> RedisDb:
    """The highest-numbered empty Redis DB (low numbers are what other tools default to),
    claimed with ``SET NX`` so two concurrent runs never share a broker."""
    import redis

    databases = int(_redis().config_get("databases").get("databases", 16))
    for number in range(databases - 1, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_timeout=5)
        if client.dbsize() == 0 and client.set(CLAIM_KEY, owner, nx=True):
            return RedisDb(number)
    raise RuntimeError(f"no empty Redis DB among 1..{databases - 1} on {REDIS_HOST}:{REDIS_PORT}")
