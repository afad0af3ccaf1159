"""A throwaway PostgreSQL server from the distribution's packages (tests, `make cluster-up`).

``PostgresServer.start()`` runs ``initdb`` in a fresh directory and starts the server on a
free loopback port (trust authentication, no fsync: test data only). PostgreSQL refuses to
run as root, so as root the server runs as the ``postgres`` user that Debian's package
creates (``runuser``). ``BOTBRIDGE_TEST_POSTGRES_URL`` (a superuser URL) uses an existing
server instead. Each test gets its own database (``create_database``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from devtools import prerequisites
from devtools.stack import free_port

ENV_URL = prerequisites.POSTGRES_URL_ENV
RUN_AS = "postgres"
START_TIMEOUT_SECONDS = 60
START_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """Directory of initdb/pg_ctl: $BOTBRIDGE_TEST_POSTGRES_BIN or the newest Debian one."""
    for candidate in prerequisites.postgres_bin_dirs():
        if (candidate / "initdb").exists():
            return candidate
    raise PostgresUnavailable(prerequisites.TOOLS["PostgreSQL server"].hint())


@dataclass
class PostgresServer:
    admin_url: str = ""
    data_dir: Path | None = None
    bin_dir: Path | None = None
    options: str = ""  # the server's command-line options (port, socket directory)
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> PostgresServer:
        if os.environ.get(ENV_URL):
            return cls(admin_url=os.environ[ENV_URL])
        bin_dir = find_bin_dir()
        last = ""
        for _ in range(START_ATTEMPTS):  # a "free" port may be taken meanwhile: try another
            server = cls(bin_dir=bin_dir)
            try:
                server._init_and_start(free_port())
                return server
            except subprocess.CalledProcessError as exc:
                last = (exc.stdout or b"").decode(errors="replace")[-2000:]
                server.stop()
        raise PostgresUnavailable(f"PostgreSQL did not start:\n{last}")

    def _init_and_start(self, port: int) -> None:
        assert self.bin_dir is not None
        self.data_dir = Path(tempfile.mkdtemp(prefix="botbridge-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(RUN_AS)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root needs the {RUN_AS!r} user (Debian's postgresql package)"
                ) from exc
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.options = f"-h 127.0.0.1 -p {port} -k {self.data_dir} -c fsync=off"
        self.resume()
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def halt(self) -> None:
        """Stop the server, keeping its data (fault tests; ``resume`` starts it again)."""
        assert self.data_dir is not None
        self._run("pg_ctl", "-D", str(self.data_dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server on its data directory and port (again)."""
        assert self.data_dir is not None
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir / "data"),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            self.options,
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "start",
        )

    def _run(self, program: str, *args: str) -> None:
        assert self.bin_dir is not None
        argv = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", RUN_AS, "--", *argv]
        subprocess.run(
            argv,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
            timeout=START_TIMEOUT_SECONDS + 30,
        )

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"botbridge_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with contextlib.suppress(Exception):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        url = make_url(self.admin_url)
        with psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        ) as conn:
            conn.execute(statement.encode())

    def stop(self) -> None:
        if self.data_dir is None:
            return
        if (self.data_dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data_dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = None
