"""Harness for the gql end-to-end suite: runs `fanwire serve` and talks HTTP to it.

The binary comes from FANWIRE_BIN. Every wait is bounded only as a failure
guard: a test waits for a state (a result, a metric value), never for time.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "schema.graphql"
PUBLISH_TOKEN = "py-e2e-token"
GUARD_SECONDS = 20.0
LISTENING = re.compile(r"^fanwire listening on http://127\.0\.0\.1:(\d+)\s*$")

T = TypeVar("T")


async def guard(awaitable: Awaitable[T], what: str) -> T:
    """Awaits `awaitable`, failing the test if it does not finish within the guard."""
    try:
        return await asyncio.wait_for(awaitable, GUARD_SECONDS)
    except asyncio.TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


def fanwire_bin() -> str:
    """The binary under test; fails loudly when FANWIRE_BIN is unset or wrong."""
    path = os.environ.get("FANWIRE_BIN")
    if not path:
        pytest.fail(
            "FANWIRE_BIN is not set: point it at the fanwire binary, e.g. "
            "FANWIRE_BIN=$CARGO_TARGET_DIR/debug/fanwire pytest tests/python",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"FANWIRE_BIN={path} is not an executable file", pytrace=False)
    return path


class Server:
    """A running `fanwire serve` process and the HTTP calls the tests make to it."""

    def __init__(
        self,
        bin_path: str,
        config: Path | None = None,
        schema: Path | None = SCHEMA,
        start_seconds: float = GUARD_SECONDS,
    ) -> None:
        """Starts `fanwire serve` on `schema` (None: the one `config` names),
        with the TOML file `config` if given; it must listen within
        `start_seconds` (more for a server that compiles plugins)."""
        args = [bin_path, "serve", "--listen", "127.0.0.1:0", "--publish-token", PUBLISH_TOKEN]
        if schema is not None:
            args += ["--schema", str(schema)]
        if config is not None:
            args += ["--config", str(config)]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        # Both pipes are drained for the process's whole life so it never blocks on them.
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, lines), daemon=True),
            threading.Thread(target=self._collect_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.port = self._wait_for_port(lines, start_seconds)
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/graphql"

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def _wait_for_port(self, lines: queue.Queue[str | None], seconds: float) -> int:
        # One deadline for the whole wait, however many other lines come first.
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(
                    f"fanwire did not print its listening line within {seconds} s:\n{''.join(self.stderr)}",
                    pytrace=False,
                )
            if line is None:
                self.stop()
                code = self.process.returncode
                pytest.fail(
                    f"fanwire exited with {code} before listening:\n{''.join(self.stderr)}",
                    pytrace=False,
                )
            match = LISTENING.match(line)
            if match:
                return int(match.group(1))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the process does not exit within the guard."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=GUARD_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # The readers end at EOF once the process is gone; then the pipes can close.
        for reader in self._readers:
            reader.join(timeout=GUARD_SECONDS)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
            req.add_header("Authorization", f"Bearer {PUBLISH_TOKEN}")
        try:
            with urllib.request.urlopen(req, timeout=GUARD_SECONDS) as res:
                return res.status, res.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode()

    async def publish(self, events: Any) -> Any:
        """POSTs events to /publish (answered once fanned out: `deliveries` is counted) and returns the JSON reply; fails the test on non-200."""
        status, text = await asyncio.to_thread(self._request, "POST", "/publish?wait=dispatched", events)
        assert status == 200, f"POST /publish answered {status}: {text}"
        return json.loads(text)

    async def metric(self, name: str) -> float | None:
        """The value of one unlabelled sample from /metrics, or None."""
        status, text = await asyncio.to_thread(self._request, "GET", "/metrics")
        assert status == 200, f"GET /metrics answered {status}"
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return None

    async def wait_metric(self, name: str, expected: float) -> None:
        """Polls /metrics until `name` has the expected value."""

        async def poll() -> None:
            while await self.metric(name) != expected:
                await asyncio.sleep(0.02)

        try:
            await asyncio.wait_for(poll(), GUARD_SECONDS)
        except asyncio.TimeoutError:
            pytest.fail(f"metric {name} is {await self.metric(name)}, expected {expected}")
