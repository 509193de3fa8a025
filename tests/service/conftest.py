"""Fixtures for the service tests: a fresh audit database on each backend the service supports.

`db_url` (parametrized: sqlite, postgresql) gives each test an empty database of its own. PostgreSQL is
a real server, never a mock: a throwaway cluster from Debian's `postgresql` package (`make test`
installs it as root), made with initdb and started with pg_ctl once per test session in a temporary
folder, listening on a free loopback port only, trust authentication, fsync on. PostgreSQL refuses to
run as root, so under root the cluster belongs to the `postgres` user the package creates (else
`nobody`) and its programs run through `runuser`. Without the server programs the PostgreSQL cases
skip, with the reason; under CI=true they fail instead, since CI must test both backends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import psycopg
import pytest
from service_helpers import TOKENS, clean_env

PG_USER = "citysignal"
NOT_INSTALLED = "PostgreSQL server programs (Debian package 'postgresql') not found; `make test` installs them as root"


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL install (/usr/lib/postgresql/N/bin), else `pg_ctl` on PATH."""

    def version(pg_ctl: Path) -> list[int]:
        return [int(x) for x in pg_ctl.parent.parent.name.split(".") if x.isdigit()]

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    run_as: list[str]  # runuser prefix under root, empty otherwise
    _dbs: Iterator[int] = field(default_factory=count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def pg(self, program: str, *args: str) -> None:
        cmd = [*self.run_as, str(self.bindir / program), *args]
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def start(self) -> None:
        self.pg("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "--encoding=UTF8", "--locale=C",
                "--no-sync")  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self.pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "server.log"),
                "-o", options)  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))  # throwaway: no checkpoint

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"audit{next(self._dbs)}"
        with psycopg.connect(self.url("postgres", "postgresql"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
            return name
    raise RuntimeError("running as root, but neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bindir()
    if bindir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {NOT_INSTALLED}")
        pytest.skip(NOT_INSTALLED)
    root = Path(tempfile.mkdtemp(prefix="citysignal-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = unprivileged_user()
        shutil.chown(root, user)
        run_as = ["runuser", "-u", user, "--"]
    server = PostgresServer(bindir, root, free_port(), run_as)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def new_database(request: pytest.FixtureRequest) -> Callable[[str, Path], str]:
    """`new_database(backend, folder)`: the URL of a fresh, empty audit database, a SQLite file in `folder` or
    a database on the session's PostgreSQL server (started on first use)."""

    def make(backend: str, folder: Path) -> str:
        if backend == "sqlite":
            return f"sqlite:///{folder / 'audit.db'}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database()

    return make


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, new_database: Callable[[str, Path], str]) -> str:
    """A fresh, empty audit database on each backend."""
    return new_database(request.param, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, for a module's long-lived service (with `new_database`)."""
    return str(request.param)


@pytest.fixture(scope="session")
def serve_env() -> dict[str, str]:
    """The environment of a `citysignal serve` under test: strict settings, the users of service_helpers
    (viewer vera, operators otto and burst, admin ada) and no rate limit that a test would run into."""
    tokens = ",".join(f"{t.name}:{t.role.name}:{t.token}" for t in TOKENS)
    unlimited = "1000000/1"
    return clean_env(CITYSIGNAL_ENV="test", CITYSIGNAL_TOKENS=tokens, CITYSIGNAL_OVERRIDE_RATE=unlimited,
                     CITYSIGNAL_CONTROLLER_RATE=unlimited, CITYSIGNAL_REFUSAL_AUDIT_RATE=unlimited)  # fmt: skip
