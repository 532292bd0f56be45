"""PostgreSQL and Redis for the distributed run: reach them (start them if they are down), give
each run a fresh database and a Redis DB number of its own, and clean both up afterwards.

Both are shared with whoever else uses this machine, so a run only ever drops the database it
created and flushes the Redis DB it claimed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "imagelabels:distributed:claimed-by"  # marks a Redis DB as taken by one run


def _pg_connect(dbname: str = "postgres") -> Any:
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=5)
    connection.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    return connection


def _pg_reachable() -> bool:
    try:
        _pg_connect().close()
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
    if not _pg_reachable() and shutil.which("service"):
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
    if not _pg_reachable():
        print("PostgreSQL is not reachable on 127.0.0.1:5432: starting it", flush=True)
        _start_postgres()
        _wait(_pg_reachable, "PostgreSQL")
    if not _redis_reachable():
        print("Redis is not reachable on 127.0.0.1:6379: starting it", flush=True)
        _start_redis()
        _wait(_redis_reachable, "Redis")


def database_url(dbname: str) -> str:
    """SQLAlchemy URL with the psycopg2 driver named: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not installed."""
    return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def create_database(dbname: str) -> None:
    """A fresh, empty metadata database for this run (never reuse one: stale runs and TIs would
    leak into the assertions)."""
    connection = _pg_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        connection.close()


def drop_database(dbname: str) -> None:
    """Drop this run's database, first ending sessions a killed process may have left behind."""
    connection = _pg_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
    finally:
        connection.close()


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
