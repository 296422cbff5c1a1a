"""Real Redis and PostgreSQL servers for the tests, started on 127.0.0.1 in temporary folders.

The Debian packages ``redis-server`` and ``postgresql`` provide the binaries (``.ci/run``
installs them). PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away Redis; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install the Debian package 'redis-server'")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sf-redis-") as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install the Debian package 'postgresql'")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """A throw-away PostgreSQL cluster (database ``postgres``, user ``slimforge``) that can be
    stopped and started again on the same port and data folder: a database outage in a test.

    ``start()`` runs the server, ``stop()`` shuts it down the way a restart does (every session
    is cut), ``close()`` stops it and deletes its folder. :func:`postgres_server` wraps one.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgresql+psycopg://slimforge@127.0.0.1:{self.port}/postgres"
        self._tmp = Path(tempfile.mkdtemp(prefix="sf-pg-"))
        self._data = self._tmp / "data"
        self._proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self._tmp, "postgres", "postgres")
        try:
            subprocess.run(
                _as_postgres(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(self._data),
                        "-U",
                        "slimforge",
                        "-A",
                        "trust",
                        "--no-sync",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def start(self) -> None:
        """Run the server and wait until it accepts connections."""
        assert self._proc is None or self._proc.poll() is not None, "already running"
        self._proc = subprocess.Popen(
            _as_postgres(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self._data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                    str(self._tmp),
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self._proc)
        _wait_accepting(self.url)

    def stop(self) -> None:
        """Fast shutdown (``pg_ctl stop -m fast``): open sessions are terminated, transactions
        in flight roll back, new connections are refused until :meth:`start`."""
        if self._proc is None or self._proc.poll() is not None:
            return
        # pg_ctl sends the postmaster itself SIGINT (fast shutdown). As root our child is
        # runuser, which does not pass SIGINT on and turns SIGTERM into a "smart" shutdown
        # (that waits for every client to leave) followed by SIGKILL.
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "stop", "-D", str(self._data), "-m", "fast", "-w"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._proc.wait(timeout=30)

    def close(self) -> None:
        """Stop the server (if running) and delete its folder."""
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                self._proc.wait(timeout=30)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster with database ``slimforge``; yields its URL."""
    with PostgresServer() as server:
        yield server.url


def _wait_accepting(url: str, timeout: float = 30) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        engine.dispose()


def fresh_database(server_url: str, name: str) -> str:
    """Create an empty database on the server and return its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
