"""The real services and processes the bus, source and plugin tests use:
PostgreSQL, NATS JetStream and Redis (started by ``tests/services.sh`` when
they are down; a test fails, never skips, when one cannot be had), the
``fanwire`` binary as a second node, and the bundled WebAssembly plugins.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_URL = "postgres://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379"
BROKER_URLS = {"nats": NATS_URL, "redis": REDIS_URL}
PLUGINS = ROOT / "plugins" / "dist"
_PORTS = {"postgres": 5432, "redis": 6379, "nats": 4222}
_counter = 0


def unique(prefix: str) -> str:
    """A name no other test, run or helper uses."""
    global _counter
    _counter += 1
    return f"{prefix}_{os.getpid()}_{time.time_ns() % 10**9}_{_counter}"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    """Makes sure `service` listens, starting the machine's services if not;
    fails the test loudly when it cannot be had."""
    port = _PORTS[service]
    if _listening(port):
        return
    done = subprocess.run(
        ["bash", str(ROOT / "tests" / "services.sh")], capture_output=True, text=True, timeout=120
    )
    if not _listening(port):
        pytest.fail(f"{service} is required on 127.0.0.1:{port} and could not be started:\n{done.stderr}")


def psql(sql: str) -> str:
    """Runs SQL in the test database with psql; fails the test on an error."""
    require("postgres")
    done = subprocess.run(
        ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        pytest.fail(f"psql failed: {done.stderr}")
    return done.stdout


def install_postgres_sql() -> None:
    """Installs docs/postgres.sql (idempotent; another suite may be
    installing it at the same moment, so a conflict is retried)."""
    require("postgres")
    for _ in range(5):
        done = subprocess.run(
            ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(ROOT / "docs" / "postgres.sql")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"cannot install docs/postgres.sql: {done.stderr}")


def _raw(port: int, request: bytes, until: bytes) -> None:
    deadline = time.monotonic() + 10
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        got = b""
        while until not in got:
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {until!r} from 127.0.0.1:{port}; got {got[-200:]!r}")
            chunk = s.recv(4096)
            if not chunk:
                return
            got += chunk


def drop_stream(kind: str, stream: str) -> None:
    """Deletes a test's stream from the shared broker."""
    if kind == "nats":
        _raw(
            4222,
            f'CONNECT {{"verbose":false}}\r\nPUB $JS.API.STREAM.DELETE.{stream} 0\r\n\r\nPING\r\n'.encode(),
            b"PONG",
        )
    else:
        _raw(6379, f"*2\r\n$3\r\nDEL\r\n${len(stream)}\r\n{stream}\r\n".encode(), b":")


def plugin(name: str) -> Path:
    """A bundled plugin built by ``bash plugins/build.sh`` (tests/run.sh runs it first)."""
    path = PLUGINS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `bash plugins/build.sh` first")
    return path


def fanwire_bin() -> Path:
    """The `fanwire` binary (python/check.sh builds it and sets FANWIRE_BIN)."""
    given = os.environ.get("FANWIRE_BIN")
    if given:
        path = Path(given)
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fanwire"
        target = Path(os.environ.get("CARGO_TARGET_DIR", cache / "target"))
        path = target / "debug" / "fanwire"
    if not path.is_file():
        pytest.fail(f"the fanwire binary is missing at {path}: `cargo build -p fanwire-server --bin fanwire`")
    return path


@dataclass
class Host:
    """A `fanwire serve` process."""

    process: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=20) as response:
            return json.loads(response.read())

    def publish(self, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/publish", data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())


@contextmanager
def host(config: str, folder: Path) -> Iterator[Host]:
    """Runs `fanwire serve --config` with `config` (TOML) until the block ends."""
    path = folder / f"{unique('fanwire')}.toml"
    path.write_text(config)
    log = path.with_suffix(".log")
    with log.open("w") as err:
        process = subprocess.Popen(
            [str(fanwire_bin()), "serve", "--listen", "127.0.0.1:0", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert process.stdout is not None
        # A hang breaker only: the node prints this line once it serves.
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("fanwire listening on http://"):
            pytest.fail(f"fanwire did not start ({line!r}); its log:\n{log.read_text()}")
        yield Host(process, int(line.strip().rsplit(":", 1)[1]), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def in_thread(func: Any, *args: Any) -> Any:
    """Runs blocking `func` (HTTP, psql) off the loop."""
    return await asyncio.to_thread(func, *args)
