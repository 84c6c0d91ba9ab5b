"""What a newcomer copies, run as written: every ```python block of
python/README.md and the top-level README.md, and every example in
examples/subscriptions-*, each in a fresh venv that has only the built wheel
with the extra it names (``pip install './python[fastapi]'`` or
``fanwire[fastapi]`` in its text; none named: the bare package).

A block is a script that must exit 0, unless the HTML comment on the line
above it says it serves::

    <!-- snippet: serves=ws://127.0.0.1:4000/graphql init={"token":"secret"} closes=1001 -->

Then it runs as a process, a real client connects there (and is acked, with
``init`` as the ``connection_init`` payload), the process gets SIGINT and
must exit, the client seeing close ``closes`` (default 1001). The one edit
the runner makes: the port is replaced by a free one, so runs never
collide on a busy machine. ``env=NAME=VALUE`` sets what a block visibly
reads from the environment. Blocks run from the repository root, so paths
such as ``plugins/dist/...`` are as the README says.

Every wait has a deadline and says what it waited for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "python" / "README.md", ROOT / "README.md"]
EXAMPLES = sorted(ROOT.glob("examples/subscriptions-*/*.py"))

#: The first ``pip install 'fanwire[extra]'`` in a block or example names its extra.
EXTRA = re.compile(r"pip install '?(?:fanwire|\./python)\[(\w+)\]")
MARKER = re.compile(r"^<!--\s*snippet:(.*?)-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")

SCRIPT_SECONDS = 120.0
START_SECONDS = 60.0
STEP_SECONDS = 20.0
STOP_SECONDS = 30.0
INSTALL_SECONDS = 240.0


@dataclass
class Snippet:
    """One ```python block and what its marker says about running it."""

    source: Path
    line: int
    code: str
    serves: str | None = None
    init: dict[str, Any] = field(default_factory=dict)
    closes: int = 1001
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"

    @property
    def extra(self) -> str | None:
        return extra_of(self.code)


def extra_of(text: str) -> str | None:
    """The extra `text` tells the reader to install, if any."""
    match = EXTRA.search(text)
    return match.group(1) if match else None


def _marker(line: str) -> dict[str, str]:
    match = MARKER.match(line.strip())
    if match is None:
        return {}
    fields = {}
    for token in match.group(1).split():
        key, sep, value = token.partition("=")
        if not sep or key not in {"serves", "init", "closes", "env"}:
            raise ValueError(f"unknown snippet marker field {token!r} in {line!r}")
        fields[key] = value
    return fields


def snippets() -> list[Snippet]:
    """Every ```python block of the READMEs, in order."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if fence is None:
                index += 1
                continue
            start = index
            end = start + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if fence.group(1) == "python":
                marker = _marker(lines[start - 1]) if start > 0 else {}
                snippet = Snippet(doc, start + 1, "\n".join(lines[start + 1 : end]) + "\n")
                if "serves" in marker:
                    snippet.serves = marker["serves"]
                if "init" in marker:
                    snippet.init = json.loads(marker["init"])
                if "closes" in marker:
                    snippet.closes = int(marker["closes"])
                if "env" in marker:
                    name, _, value = marker["env"].partition("=")
                    snippet.env[name] = value
                found.append(snippet)
            index = end + 1
    return found


def free_port() -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Venvs:
    """Fresh venvs, one per extra, each with the built wheel only."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._made: dict[str | None, Path] = {}
        wheel = os.environ.get("FANWIRE_WHEEL")
        if not wheel or not Path(wheel).is_file():
            pytest.fail(f"FANWIRE_WHEEL={wheel!r} is not the built wheel (python/check.sh sets it)")
        self._wheel = Path(wheel)

    def python(self, extra: str | None) -> Path:
        """The interpreter of a venv holding ``fanwire[extra]`` (made on first use)."""
        if extra not in self._made:
            venv = self._folder / f"venv-{extra or 'bare'}"
            # No pip in the venv: the check venv's pip installs into it (--python),
            # which saves bootstrapping pip three times.
            _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "making a venv", 120)
            requirement = f"fanwire[{extra}] @ {self._wheel.as_uri()}" if extra else f"fanwire @ {self._wheel.as_uri()}"
            _run(
                [
                    sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--disable-pip-version-check", requirement,
                ],
                f"pip install {requirement}",
                INSTALL_SECONDS,
            )
            self._made[extra] = venv / "bin" / "python"
        return self._made[extra]


def _run(argv: list[str], what: str, seconds: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gave up after {seconds} s waiting for {what}")
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a newcomer's shell would have: none of this venv's."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.update(extra or {})
    return env


def run_script(python: Path, file: Path, env: dict[str, str]) -> None:
    """Runs `file`, which must exit 0 within the deadline."""
    try:
        done = subprocess.run(
            [str(python), str(file)], cwd=ROOT, env=clean_env(env), capture_output=True, text=True,
            timeout=SCRIPT_SECONDS, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{file.name} did not exit within {SCRIPT_SECONDS} s:\n{err.stdout!r}\n{err.stderr!r}")
    assert done.returncode == 0, f"{file.name} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"


@dataclass
class Process:
    """A serving snippet or example while it runs."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(python: Path, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[Process]:
    """Runs `python argv` until the block ends; yields once `port` accepts."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), *argv], cwd=ROOT, env=clean_env(env), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    running = Process(process, log, port)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _accepts(port):
            if process.poll() is not None:
                pytest.fail(f"{argv[0]} exited with {process.returncode} before listening:\n{running.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"gave up after {START_SECONDS} s waiting for {argv[0]} to listen on {port}:\n{running.output()}")
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(running: Process) -> int:
    """SIGINT (Ctrl-C), then the exit code; fails if the process outlives the deadline."""
    running.process.send_signal(signal.SIGINT)
    try:
        return running.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait(timeout=STOP_SECONDS)
        pytest.fail(f"still running {STOP_SECONDS} s after SIGINT:\n{running.output()}")


@contextmanager
def client(url: str, init: dict[str, Any] | None = None) -> Iterator[ClientConnection]:
    """A graphql-transport-ws client, acknowledged, until the block ends."""
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=STEP_SECONDS) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": init or {}}))
        assert json.loads(recv(ws, "the connection_ack")) == {"type": "connection_ack"}
        yield ws


def recv(ws: ClientConnection, what: str) -> str | bytes:
    """The next frame, or a failure naming `what` after the deadline."""
    try:
        return ws.recv(timeout=STEP_SECONDS)
    except TimeoutError:
        pytest.fail(f"gave up after {STEP_SECONDS} s waiting for {what}")


def close_code(ws: ClientConnection) -> int | None:
    """Reads to the server's close frame (bounded); its code, None if it sent none."""
    deadline = time.monotonic() + STOP_SECONDS
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.0, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        pass
    pytest.fail(f"gave up after {STOP_SECONDS} s waiting for the server's close frame")
