"""The adversarial suite's harness: a `fanwire serve` process, raw HTTP, WebSocket clients, JWTs.

The server under test is the binary named by FANWIRE_BIN (release, or debug in CI), run on
127.0.0.1 with a config written per server (small limits, so the suite is
quick). Every wait has a deadline and names what it waited for; nothing here
waits for a span of time to pass.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import queue
import re
import resource
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "schema.graphql"
PUBLISH_TOKEN = "adversarial-publish-token"
# A failure guard for one wait: generous, since the machine is shared.
GUARD = 20.0
LISTENING = re.compile(r"^fanwire listening on http://127\.0\.0\.1:(\d+)\s*$")
SUBPROTOCOL = "graphql-transport-ws"
TICK = "subscription($s: String!) { tick(stream: $s) { n payload } }"
# Names of /healthz counts that must return to 0 once every client has left.
# Read from the document by `counts()`, which takes every integer it finds
# under these keys (`/metrics` adds `fanwire_groups`, checked by `settle`).
COUNT_KEYS = ("connections", "subscriptions")

T = TypeVar("T")
Json = Any


async def within(awaitable: Awaitable[T], what: str, seconds: float = GUARD) -> T:
    """Awaits `awaitable`, failing the test (naming `what`) if it takes over `seconds`."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"gave up after {seconds:.0f} s waiting for {what}", pytrace=False)


async def until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = GUARD
) -> None:
    """Polls `check` until it is true; fails the test after `seconds`."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    await within(poll(), what, seconds)


def fanwire_bin() -> str:
    """The binary under test; fails loudly when FANWIRE_BIN is unset or wrong."""
    path = os.environ.get("FANWIRE_BIN")
    if not path:
        pytest.fail(
            "FANWIRE_BIN is not set: run tests/adversarial/run.sh, which builds the "
            "release binary and points FANWIRE_BIN at it",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"FANWIRE_BIN={path} is not an executable file", pytrace=False)
    return path


def toml_value(value: Any) -> str:
    """One TOML value: the suite's configs use only strings, numbers, booleans and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml(tables: dict[str, dict[str, Any]]) -> str:
    """A TOML document of plain tables (`{"auth.jwt": {...}}` -> `[auth.jwt]`)."""
    out = []
    for name, table in tables.items():
        out.append(f"[{name}]")
        out.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        out.append("")
    return "\n".join(out)


# The limits every suite server starts from: small, so that hitting each one is quick.
BASE_LIMITS: dict[str, Any] = {
    "max_connections": 300,
    "connections_per_second": 100000.0,
    "connection_burst": 100000.0,
    "max_subscriptions_per_connection": 1000,
    "subscribes_per_second": 100000.0,
    "subscribe_burst": 100000.0,
    "max_message_bytes": 16384,
    "queue_depth": 256,
    "init_timeout_ms": 3000,
    "keep_alive_ms": 3000,
    "max_document_bytes": 12288,
    "max_depth": 12,
    "max_aliases": 30,
    "max_fields": 500,
    "history_per_topic": 0,
}


@dataclass
class Response:
    """One HTTP response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Json:
        """The body parsed as JSON."""
        return json.loads(self.body)


class Server:
    """A running `fanwire serve` with a config written for it, and the calls tests make to it."""

    def __init__(
        self,
        limits: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        nofile: int | None = None,
        init_payload: Json = None,
    ) -> None:
        self.init_payload = init_payload
        self.dir = tempfile.TemporaryDirectory(prefix="fanwire-adversarial-")
        config = Path(self.dir.name) / "fanwire.toml"
        tables: dict[str, dict[str, Any]] = {
            "server": {
                "schema": str(SCHEMA),
                "publish_token": PUBLISH_TOKEN,
                "max_publish_bytes": 4 * 1024 * 1024,
                "shutdown_timeout_ms": 2000,
                **(server or {}),
            },
            "limits": {**BASE_LIMITS, **(limits or {})},
        }
        tables.update(extra or {})
        config.write_text(toml(tables))
        self.config_dir = Path(self.dir.name)

        def limit_descriptors() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen(
            [fanwire_bin(), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=limit_descriptors,
        )
        self.pid = self.process.pid
        self.stderr: list[str] = []
        self._stderr_seen = 0
        lines: queue.Queue[str | None] = queue.Queue()
        # Both pipes are drained for the process's whole life so it never blocks on them.
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, lines), daemon=True),
            threading.Thread(target=self._collect_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.port = self._wait_for_port(lines)
        self.ws_url = f"ws://127.0.0.1:{self.port}/graphql"
        self.warm_rss_kb = 0

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def _wait_for_port(self, lines: queue.Queue[str | None]) -> int:
        while True:
            try:
                line = lines.get(timeout=GUARD)
            except queue.Empty:
                self.stop()
                pytest.fail("fanwire did not print its listening line", pytrace=False)
            if line is None:
                self.stop()
                pytest.fail(
                    f"fanwire exited with {self.process.returncode} before listening:\n"
                    + "".join(self.stderr),
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
                self.process.wait(timeout=GUARD)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(timeout=GUARD)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        self.dir.cleanup()

    # -- the process, from /proc ------------------------------------------------

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def rss_kb(self) -> int:
        """Resident set size in KiB (VmRSS in /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line in /proc status")

    def fd_count(self) -> int:
        """Open descriptors of the process."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def new_panics(self) -> list[str]:
        """Panic lines the server wrote to stderr since the last call."""
        lines = self.stderr[self._stderr_seen :]
        self._stderr_seen += len(lines)
        return [line.rstrip() for line in lines if "panicked" in line]

    # -- HTTP -------------------------------------------------------------------

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A plain TCP connection to the server."""
        return await within(
            asyncio.open_connection("127.0.0.1", self.port), "a TCP connection to the server"
        )

    async def http(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        seconds: float = GUARD,
    ) -> Response:
        """One HTTP/1.1 request on a fresh connection (`Connection: close`), read to EOF."""
        head = {"Host": f"127.0.0.1:{self.port}", "Connection": "close"}
        if body or method == "POST":
            head["Content-Length"] = str(len(body))
        head.update(headers or {})
        request = f"{method} {path} HTTP/1.1\r\n".encode()
        request += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items())
        request += b"\r\n" + body
        return await self.http_bytes(request, f"{method} {path}", seconds)

    async def http_bytes(self, request: bytes, what: str, seconds: float = GUARD) -> Response:
        """Sends raw request bytes and parses the response, read to EOF."""

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(request)
                try:
                    await writer.drain()
                except ConnectionError:
                    pass  # The server may answer (e.g. 413) before reading all of it.
                chunks = []
                while True:
                    try:
                        chunk = await reader.read(65536)
                    except ConnectionError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                writer.close()

        data = await within(exchange(), f"the response to {what}", seconds)
        return parse_response(data, what)

    async def post_publish(self, events: Json, token: str | None = PUBLISH_TOKEN) -> Response:
        """POST /publish?wait=dispatched (answered once fanned out, with `deliveries`) with a JSON body and the suite's bearer token."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http("POST", "/publish?wait=dispatched", json.dumps(events).encode(), headers)

    async def publish(self, events: Json) -> Json:
        """Publishes, failing the test on anything but 200; returns the reply."""
        res = await self.post_publish(events)
        assert res.status == 200, f"POST /publish answered {res.status}: {res.body[:300]!r}"
        return res.json()

    async def health(self) -> Json:
        """GET /healthz as JSON; fails the test when it does not answer 200."""
        res = await self.http("GET", "/healthz")
        assert res.status == 200, f"/healthz answered {res.status}: {res.body[:300]!r}"
        return res.json()

    async def counts(self) -> dict[str, int]:
        """The /healthz counts named in COUNT_KEYS, wherever they sit in the document."""
        found: dict[str, int] = {}

        def walk(node: Json, path: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    here = f"{path}.{key}" if path else key
                    if key in COUNT_KEYS and isinstance(value, int):
                        found[here] = value
                    walk(value, here)

        walk(await self.health(), "")
        assert found, "no connection/subscription counts in /healthz"
        return found

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by name with its labels."""
        res = await self.http("GET", "/metrics")
        assert res.status == 200, f"/metrics answered {res.status}"
        samples = {}
        for line in res.body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
        return samples

    async def metric(self, name: str) -> float:
        """One sample of /metrics (0 when absent, as an unset counter reads)."""
        return (await self.metrics()).get(name, 0.0)

    async def check_alive(self) -> None:
        """The process runs, /healthz answers, and no task panicked since the last check."""
        assert self.alive(), (
            f"fanwire exited with {self.process.returncode}:\n" + "".join(self.stderr[-40:])
        )
        await self.health()
        panics = self.new_panics()
        assert not panics, "the server logged panics:\n" + "\n".join(panics)

    async def settle(self, what: str = "every count in /healthz to return to 0") -> None:
        """Waits until every /healthz count is back to 0."""

        async def zero() -> bool:
            counts = await self.counts()
            return all(v == 0 for v in counts.values()) and await self.metric("fanwire_groups") == 0

        try:
            await until(zero, what, seconds=3 * GUARD)
        except BaseException:
            print("counts:", await self.counts())
            raise

    async def warm_up(self) -> None:
        """Exercises the usual paths once and records RSS: the baseline for the leak check."""
        clients = [await Client.open(self) for _ in range(20)]
        for i, client in enumerate(clients):
            await client.init(self.init_payload)
            await client.subscribe("w", TICK, {"s": f"warm{i % 4}"})
            await client.ping_pong()
        for n in range(50):
            await self.publish([{"topic": f"ticks:warm{s}", "data": {"n": n}} for s in range(4)])
        for client in clients:
            for n in range(50):
                assert (await client.next_data("w"))["tick"]["n"] == n
            await client.close()
        await self.settle("the warm-up clients to leave")
        self.warm_rss_kb = self.rss_kb()

    async def assert_settled(self) -> None:
        """The end-of-module check: counts back to 0, RSS near its warm-up value."""
        await self.check_alive()
        await self.settle()
        rss = self.rss_kb()
        # Generous: allocators keep freed memory, and some tests parse megabytes.
        bound = 2 * self.warm_rss_kb + 128 * 1024
        assert rss <= bound, (
            f"RSS is {rss} KiB after the module, {self.warm_rss_kb} KiB after warm-up "
            f"(bound {bound} KiB)"
        )


def parse_response(data: bytes, what: str) -> Response:
    """Parses one HTTP/1.1 response (Content-Length or chunked)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response to {what}: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        body = out
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Response(status, headers, body)


# -- WebSocket clients ------------------------------------------------------------


@dataclass
class Closed:
    """How a connection ended: the close code (1006 when no close frame came) and reason."""

    code: int
    reason: str
    frames: list[Json] = field(default_factory=list)


class Client:
    """A graphql-transport-ws client on `websockets`, reading only when told to."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls,
        server: Server,
        subprotocols: Iterable[str] | None = (SUBPROTOCOL,),
        headers: dict[str, str] | None = None,
    ) -> Client:
        """Opens a connection (the upgrade must succeed)."""
        ws = await within(
            connect(
                server.ws_url,
                subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols is not None else None,
                additional_headers=headers,
                max_size=None,
                max_queue=None,
                ping_interval=None,
                open_timeout=GUARD,
                close_timeout=2,
            ),
            "the WebSocket upgrade",
        )
        return cls(ws)

    async def send(self, message: Json | str | bytes) -> None:
        """Sends a dict as JSON text, a str as text, bytes as a binary frame."""
        if isinstance(message, (str, bytes)):
            await self.ws.send(message)
        else:
            await self.ws.send(json.dumps(message))

    async def recv(self, what: str = "a message", seconds: float = GUARD) -> Json:
        """The next message, parsed."""
        try:
            raw = await within(self.ws.recv(), what, seconds)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            pytest.fail(f"connection closed ({code}) while waiting for {what}", pytrace=False)
        return json.loads(raw)

    async def init(self, payload: Json = None) -> Json:
        """connection_init, and the ack it must get."""
        message: dict[str, Json] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await self.send(message)
        ack = await self.recv("connection_ack")
        assert ack["type"] == "connection_ack", f"expected connection_ack, got {ack}"
        return ack

    async def subscribe(
        self,
        sub_id: str,
        query: str,
        variables: Json = None,
        extensions: Json = None,
    ) -> None:
        """Sends a subscribe (no answer is awaited: results come later, errors at once)."""
        payload: dict[str, Json] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        if extensions is not None:
            payload["extensions"] = extensions
        await self.send({"id": sub_id, "type": "subscribe", "payload": payload})

    async def next_message(self, sub_id: str) -> Json:
        """The next `next` payload for `sub_id`; any other message fails the test."""
        msg = await self.recv(f"a result for subscription {sub_id}")
        assert msg.get("type") == "next" and msg.get("id") == sub_id, (
            f"expected a result for {sub_id}, got {str(msg)[:300]}"
        )
        return msg["payload"]

    async def next_data(self, sub_id: str) -> Json:
        """The `data` of the next result for `sub_id`."""
        return (await self.next_message(sub_id))["data"]

    async def error_for(self, sub_id: str) -> list[Json]:
        """The `error` message that must come next for `sub_id`; returns its errors."""
        msg = await self.recv(f"an error for subscription {sub_id}")
        assert msg.get("type") == "error" and msg.get("id") == sub_id, (
            f"expected an error for {sub_id}, got {str(msg)[:300]}"
        )
        assert isinstance(msg["payload"], list) and msg["payload"], msg
        return msg["payload"]

    async def closed(self, what: str = "the server to close", seconds: float = GUARD) -> Closed:
        """Reads until the connection ends; returns the close and what came before it."""
        frames: list[Json] = []

        async def drain() -> Closed:
            while True:
                try:
                    raw = await self.ws.recv()
                except ConnectionClosed as exc:
                    if exc.rcvd is None:
                        return Closed(1006, "", frames)
                    return Closed(exc.rcvd.code, exc.rcvd.reason, frames)
                frames.append(json.loads(raw) if isinstance(raw, str) else raw)

        return await within(drain(), what, seconds)

    async def ping_pong(self) -> None:
        """A protocol ping that must be answered by a pong: the connection still works, and
        (the server handling a connection's messages in order) everything sent before it
        has been handled: a subscribe before it is live."""
        await self.send({"type": "ping"})
        msg = await self.recv("a pong")
        assert msg["type"] == "pong", msg

    async def close(self) -> None:
        """A clean client close."""
        await within(self.ws.close(), "the close handshake")


async def upgrade_status(server: Server, headers: dict[str, str] | None = None) -> int:
    """Tries a WebSocket upgrade; returns 101 or the HTTP status it was refused with."""
    try:
        client = await Client.open(server, headers=headers)
    except InvalidStatus as exc:
        return exc.response.status_code
    await client.close()
    return 101


# -- raw WebSocket (for clients that misbehave below the framing) ----------------


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client frame (mask 0: the bytes go out as they are, which is allowed)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def raw_upgrade(
    server: Server, recv_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket upgrade done by hand on a plain socket (optionally with a tiny receive buffer)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if recv_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
    sock.setblocking(False)
    await within(
        asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)),
        "a TCP connection",
    )
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /graphql HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        ).encode()
    )
    head = await within(reader.readuntil(b"\r\n\r\n"), "the upgrade response")
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(length)


async def raw_until(reader: asyncio.StreamReader, message_type: str) -> None:
    """Reads raw frames until a text frame whose JSON `type` is `message_type`."""

    async def scan() -> None:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 1 and json.loads(payload).get("type") == message_type:
                return

    await within(scan(), f"a {message_type} on a raw connection")


# -- JWT ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """base64url without padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: Json, key: bytes, header: Json = None, alg: str = "HS256") -> str:
    """A JWT with `claims`, signed with HMAC (HS256/384/512) under `key`, or unsigned for `none`."""
    head = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(claims).encode())
    )
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    if alg == "none":
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), digests[alg]).digest()
    return signing_input + "." + b64url(signature)
