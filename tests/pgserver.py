"""A throwaway PostgreSQL cluster on 127.0.0.1, and a fresh database for each test that needs one.

`PostgresServer.start` runs Debian's ``initdb`` and ``pg_ctl`` (found on the
PATH or under ``/usr/lib/postgresql/*/bin``) on a free port, with trust
authentication and its socket and data in a temporary folder. PostgreSQL
refuses to run as root, so under root both run as the ``postgres`` user
that the Debian package creates.

The Trunkline schema is migrated once into a template database. Each
`new_database` copies that template, which takes a fraction of the time
of running the migrations again.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sqlalchemy import create_engine, text

START_TIMEOUT_S = 60
TEMPLATE = "trunkline_template"


def find_binaries() -> Path | None:
    """Return the folder with ``initdb`` and ``pg_ctl``, or None where PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster, started by `start` and removed by `stop`."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="trunkline-postgres-"))
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._admin = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster, start it and migrate the template database."""
        if self._as_postgres:
            shutil.chown(self.folder, user="postgres")
        data = self.folder / "data"
        self._run("initdb", "--auth=trust", "--username=postgres", "--encoding=UTF8", "-D", str(data))
        # fsync off: the cluster is thrown away with the test session.
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -F"
        self._run(
            "pg_ctl", "-w", "-t", str(START_TIMEOUT_S), "-D", str(data),
            "-l", str(self.folder / "server.log"), "-o", options, "start",
        )  # fmt: skip
        self._admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with self._admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {TEMPLATE}"))

        from trunkline.store import open_store

        open_store(self.url(TEMPLATE)).dispose()

    def new_database(self) -> str:
        """Create an empty, migrated database and return its URL."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with self._admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `new_database`, closing the connections still open to it."""
        name = url.rsplit("/", 1)[1]
        with self._admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        data = self.folder / "data"
        if data.exists():
            self._run("pg_ctl", "-w", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *arguments: str, check: bool = True) -> None:
        command = [str(self.binaries / program), *arguments]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30)
        if check and result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{program} failed with status {result.returncode}: {result.stderr.strip()}\n{tail}"
            )


@contextmanager
def store_url_for(backend: str, folder: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of an empty store on `backend` ("sqlite" or "postgresql"); drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'records.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database()
    try:
        yield url
    finally:
        server.drop_database(url)
