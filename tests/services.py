"""Real local services for the distributed tests: a moto S3 server, a local Ray session, a Prefect server.

The fixtures that start them (`moto_s3`, `local_ray`, `prefect_server`) are in conftest.py; this module holds
the servers and helpers they and the tests use.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator


REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_SESSION_TOKEN": "testing-session",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)


def reset_moto(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()


def small_scans(n: int, size: int = 48, seed: int = 0) -> dict[str, bytes]:
    """`n` small synthetic 'scans' (JPEG/PNG, with a few scratch-like lines), name -> bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out: dict[str, bytes] = {}
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size]
        base = (96 + 60 * np.sin(xx / (3 + i)) + 40 * np.cos(yy / 5)).clip(0, 255)
        img = np.stack([base, base * 0.9, base * 0.8], -1) + rng.normal(0, 6, (size, size, 3))
        img[:, (7 * i + 5) % size] = 250          # a vertical scratch
        buf = io.BytesIO()
        fmt = "PNG" if i % 2 else "JPEG"
        Image.fromarray(img.clip(0, 255).astype("uint8")).save(buf, format=fmt)
        out[f"scan_{i:02d}.{'png' if fmt == 'PNG' else 'jpg'}"] = buf.getvalue()
    return out


CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x13" * 200   # a JPEG header, then garbage
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40                          # truncated PNG


class PrefectServer:
    """`prefect server start` on a free port with its own PREFECT_HOME; `.env` is what clients need."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.proc: subprocess.Popen | None = None
        self.log = home / "server.log"

    def start(self, timeout: float = 90.0) -> None:
        env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def run(self, *args: str, timeout: float = 180, cwd: Path = REPO, extra_env: dict | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "prefect"), *args], env={**self.env, **(extra_env or {})},
                              cwd=cwd, capture_output=True, text=True, timeout=timeout)

    def spawn(self, *args: str, log: Path, cwd: Path = REPO, extra_env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([str(VENV_BIN / "prefect"), *args], env={**self.env, **(extra_env or {})},
                                cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group we started (twice if needed: a Prefect worker may want two), then SIGKILL."""
    if proc.poll() is not None:
        return
    for _ in range(2):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace / 2)
            return
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class RayHead:
    """A throw-away Ray head (`ray start --head --block`, 2 CPUs, no dashboard) that drivers reach by address.
    Only this process group is stopped afterwards (never `ray stop`, which would stop every Ray on the machine)."""

    def __init__(self, tmp: Path, auth_token: str | None = None):
        """auth_token None: RAY_AUTH_MODE=disabled. A token: Ray's *default* auth mode (RAY_AUTH_MODE unset),
        which in Ray 2.59+ turns token authentication on when the head has a token ($RAY_AUTH_TOKEN here, so
        nobody's ~/.ray/auth_token is touched); drivers need the same token."""
        self.auth_token = auth_token
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = tmp / "ray-head.log"
        # its own temp dir: `ray start` records its address in TEMP/ray_current_cluster, and a plain
        # ray.init() elsewhere on this machine must not find (and join) this test cluster
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        if self.auth_token:
            env.pop("RAY_AUTH_MODE", None)
            env["RAY_AUTH_TOKEN"] = self.auth_token
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", "--head", f"--port={self.port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}", "--block"],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray head exited:\n{self.log.read_text()[-3000:]}")
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"ray head not up after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:       # the whole session is in this process group: a short grace is enough
            stop_process(self.proc, grace=6)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
