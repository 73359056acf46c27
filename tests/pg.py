"""A throw-away PostgreSQL server for tests: initdb + pg_ctl on 127.0.0.1 and a free port, in a temporary
folder, run as the `postgres` user when we are root (PostgreSQL refuses to run as root). Removed afterwards.

    with PostgresServer.start() as pg:          # raises PostgresUnavailable with the reason when it cannot
        url = pg.create_database("t1")          # postgresql+psycopg://postgres@127.0.0.1:PORT/t1
        url = pg.create_schema("t2")            # .../postgres?options=-csearch_path%3Dt2 (cheaper)
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir() -> Path | None:
    env = os.environ.get("OLDPHOTO_PG_BIN")
    cands = [env] if env else []
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for extra in ("/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin", "/usr/bin"):
        cands.append(extra)
    for c in cands:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    which = shutil.which("initdb")
    return Path(which).parent if which and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path, port: int, runas: list[str]) -> None:
        self.bin_dir, self.root, self.port, self.runas = bin_dir, root, port, runas
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "server.log"

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
        runas: list[str] = []
        root = Path(tempfile.mkdtemp(prefix="oldphoto-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(root, ignore_errors=True)
                raise PostgresUnavailable("running as root and there is no `postgres` user to run the server as")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            os.chmod(root, 0o700)
            tool = shutil.which("runuser") or shutil.which("su")
            runas = [tool, "-u", "postgres", "--"] if tool and tool.endswith("runuser") else []
            if not runas:
                shutil.rmtree(root, ignore_errors=True)
                raise PostgresUnavailable("running as root and `runuser` is missing")
        port = _free_port()
        srv = cls(bin_dir, root, port, runas)
        try:
            srv._run("initdb", "-D", str(srv.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
                     "--locale=C")
            srv._run("mkdir", "-p", str(srv.sock), tool_dir=False)
            opts = (f"-p {port} -k {srv.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            srv._run("pg_ctl", "-D", str(srv.data), "-o", opts, "-l", str(srv.log), "-w", "-t", "60", "start")
        except Exception as e:
            log = srv.log.read_text(errors="replace")[-2000:] if srv.log.exists() else ""
            srv.stop()
            raise PostgresUnavailable(f"could not start PostgreSQL: {e}\n{log}") from None
        return srv

    def _run(self, tool: str, *args: str, tool_dir: bool = True) -> str:
        exe = str(self.bin_dir / tool) if tool_dir else tool
        cmd = self.runas + [exe, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-1500:]}")
        return p.stdout

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, name: str, dbname: str = "postgres") -> str:
        """A fresh, empty schema; the URL makes it the connection's search_path, so everything (including
        Alembic's version table) lands there. Much cheaper than a database per test (no 8 MB template copy)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}",
                             autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(dbname)}?options=-csearch_path%3D{name}"

    def pause(self) -> None:
        """Stop the server but keep its data (an outage); `resume()` starts it again on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
