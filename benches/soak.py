"""The soak: churning connections, subscriptions and publishes against one `fanwire serve`
for MINUTES minutes, with slow and never-reading clients among them.

Every minute it prints the server's RSS and descriptor count (/proc), the /healthz
counts and the drops (/metrics). It exits 1 if any of them grows without bound:
the last minutes are compared with minute 1 (see SLACK below and benches/README.md),
and after the load stops the counts must return to 0. Loopback only; every loop ends
at the deadline. Run through `bash benches/soak.sh`, which builds the release binary
and this script's venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

SCHEMA = Path(__file__).resolve().parent.parent / "tests" / "adversarial" / "schema.graphql"
TOKEN = "soak-token"
TICK = "subscription($s: String!) { tick(stream: $s) { n payload } }"
TOPICS = 20
# How much a figure may grow between minute 1 and the mean of the last two minutes
# before the soak calls it unbounded: a factor and an absolute allowance. Churn makes
# connection counts wander, and allocators keep some freed memory, hence the room.
SLACK = {
    "rss_kb": (1.5, 48 * 1024),
    "fds": (1.5, 64),
    "connections": (1.5, 64),
    "subscriptions": (1.5, 256),
    "groups": (1.5, 64),
}
# Drops are a counter: its per-minute increase must not keep rising.
DROP_RATE_SLACK = (2.0, 5000)

CONFIG = """
[server]
schema = "{schema}"
publish_token = "{token}"
shutdown_timeout_ms = 2000

[limits]
max_connections = 2000
connections_per_second = 100000.0
connection_burst = 100000.0
max_subscriptions_per_connection = 50
subscribes_per_second = 10000.0
subscribe_burst = 10000.0
queue_depth = 128
keep_alive_ms = 15000
init_timeout_ms = 2000
history_per_topic = 200
"""


@dataclass
class Tally:
    """Client-side counts, for the minute lines and the verdict."""

    connects: int = 0
    events: int = 0
    publishes: int = 0
    unexpected: list[str] = field(default_factory=list)


class Server:
    """The fanwire process under soak."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="fanwire-soak-")
        config = Path(self.dir.name) / "fanwire.toml"
        config.write_text(CONFIG.format(schema=SCHEMA, token=TOKEN))
        self.process = subprocess.Popen(
            [binary, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            match = re.match(r"^fanwire listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
            if time.monotonic() > deadline:
                raise SystemExit("soak: fanwire did not print its listening line")
        else:
            raise SystemExit("soak: fanwire exited before listening:\n" + "".join(self.stderr))
        threading.Thread(target=lambda: [None for _ in self.process.stdout or []], daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.port}/graphql"

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    async def http(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            data = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), rest

    async def health(self) -> dict[str, int]:
        status, body = await self.http("GET", "/healthz")
        assert status == 200, f"/healthz answered {status}"
        counts: dict[str, int] = {}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("connections", "subscriptions", "groups") and isinstance(value, int):
                        counts[key] = counts.get(key, 0) + value
                    walk(value)

        walk(json.loads(body))
        return counts

    async def metrics(self) -> tuple[int, int]:
        """(drops of every reason, live groups) from /metrics."""
        status, body = await self.http("GET", "/metrics")
        assert status == 200, f"/metrics answered {status}"
        drops, groups = 0.0, 0.0
        for line in body.decode().splitlines():
            if line.startswith("fanwire_drops_total"):
                drops += float(line.rsplit(" ", 1)[1])
            elif line.startswith("fanwire_groups "):
                groups = float(line.rsplit(" ", 1)[1])
        return int(drops), int(groups)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.dir.cleanup()


async def open_client(server: Server) -> ClientConnection:
    ws = await asyncio.wait_for(
        connect(
            server.url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            max_size=None,
            ping_interval=None,
            open_timeout=20,
            close_timeout=2,
        ),
        30,
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert ack["type"] == "connection_ack", ack
    return ws


def subscribe(sub_id: str, topic: int) -> str:
    return json.dumps(
        {"id": sub_id, "type": "subscribe", "payload": {"query": TICK, "variables": {"s": f"t{topic}"}}}
    )


async def churner(server: Server, deadline: float, rng: random.Random, tally: Tally) -> None:
    """Connect, subscribe to a few topics, read a little, sometimes complete and
    resubscribe, then leave (cleanly, or by dropping the socket); again until the deadline."""
    while time.monotonic() < deadline:
        try:
            ws = await open_client(server)
        except (OSError, InvalidStatus, TimeoutError, ConnectionClosed) as exc:
            tally.unexpected.append(f"churner connect: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        tally.connects += 1
        try:
            for i in range(rng.randint(1, 5)):
                await ws.send(subscribe(str(i), rng.randrange(TOPICS)))
            for _ in range(rng.randint(1, 60)):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["type"] == "next":
                    tally.events += 1
                elif msg["type"] == "error":
                    tally.unexpected.append(f"churner error: {str(msg)[:200]}")
                if rng.random() < 0.05:
                    await ws.send(json.dumps({"id": "0", "type": "complete"}))
                    await ws.send(subscribe("0", rng.randrange(TOPICS)))
        except TimeoutError:
            pass  # a quiet topic: leave
        except ConnectionClosed as exc:
            tally.unexpected.append(f"churner closed by the server: {exc!r}")
        if rng.random() < 0.3:
            ws.transport.abort()
        else:
            try:
                await asyncio.wait_for(ws.close(), 10)
            except TimeoutError:
                ws.transport.abort()


async def reader(server: Server, deadline: float, pace: float, tally: Tally) -> None:
    """A long-lived client on every topic, reading one frame per `pace` seconds (0: at once).
    A slow one falls behind, has results dropped, and may be disconnected: it reconnects."""
    while time.monotonic() < deadline:
        ws = None
        try:
            ws = await open_client(server)
            for topic in range(TOPICS):
                await ws.send(subscribe(str(topic), topic))
            while time.monotonic() < deadline:
                msg = await asyncio.wait_for(ws.recv(), 30)
                if json.loads(msg)["type"] == "next":
                    tally.events += 1
                if pace:
                    await asyncio.sleep(pace)
            await asyncio.wait_for(ws.close(), 10)
        except ConnectionClosed as exc:
            if not pace:
                tally.unexpected.append(f"reader closed by the server: {exc!r}")
        except (OSError, InvalidStatus, TimeoutError) as exc:
            tally.unexpected.append(f"reader: {exc!r}")
            await asyncio.sleep(0.5)
        finally:
            if ws is not None:
                # A client left half-closed would stay "connected" for good.
                ws.transport.abort()


async def never_reader(server: Server, deadline: float) -> None:
    """Subscribes to every topic on a raw socket with a tiny receive buffer and never reads;
    the server drops it after two keep-alive periods; it comes back."""
    import socket

    while time.monotonic() < deadline:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)), 10)
            _, writer = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError):
            sock.close()
            await asyncio.sleep(0.5)
            continue
        frames = [json.dumps({"type": "connection_init"})] + [subscribe(str(t), t) for t in range(TOPICS)]
        writer.write(
            b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            + b"".join(mask(f.encode()) for f in frames)
        )
        # Held past the point where its queue overflows (the kernel buffers fill in seconds)
        # and past two keep-alive periods, when the server gives up on it; then dropped.
        end = min(deadline, time.monotonic() + 45)
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
        writer.transport.abort()


def mask(payload: bytes) -> bytes:
    """A client text frame with a zero mask."""
    n = len(payload)
    head = b"\x81" + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + b"\0\0\0\0" + payload


async def publisher(server: Server, deadline: float, rng: random.Random, tally: Tally) -> None:
    """Batches of 1-20 events to random topics, about 100 requests a second."""
    n = 0
    while time.monotonic() < deadline:
        batch = [
            {"topic": f"ticks:t{rng.randrange(TOPICS)}", "data": {"n": n + i, "payload": "x" * rng.randint(0, 512)}}
            for i in range(rng.randint(1, 20))
        ]
        n += len(batch)
        try:
            status, body = await server.http("POST", "/publish", json.dumps(batch).encode())
            if status != 200:
                tally.unexpected.append(f"publish answered {status}: {body[:200]!r}")
            tally.publishes += 1
        except (OSError, TimeoutError) as exc:
            tally.unexpected.append(f"publish: {exc!r}")
        await asyncio.sleep(0.01)


async def sample(server: Server) -> dict[str, int]:
    counts = await server.health()
    drops, groups = await server.metrics()
    return {
        "rss_kb": server.rss_kb(),
        "fds": server.fds(),
        "connections": counts.get("connections", 0),
        "subscriptions": counts.get("subscriptions", 0),
        "groups": groups,
        "drops": drops,
    }


def line(minute: int | str, s: dict[str, int], tally: Tally) -> str:
    return (
        f"soak minute {minute}: rss {s['rss_kb'] / 1024:.1f} MiB, fds {s['fds']}, "
        f"connections {s['connections']}, subscriptions {s['subscriptions']}, groups {s['groups']}, "
        f"drops {s['drops']} | client: {tally.connects} connects, {tally.events} events, "
        f"{tally.publishes} publishes, {len(tally.unexpected)} unexpected"
    )


def verdict(samples: list[dict[str, int]]) -> list[str]:
    """Which figures grew without bound: the mean of the last two minutes against minute 1."""
    failures = []
    first = samples[0]
    last = samples[-2:]
    for key, (factor, allowance) in SLACK.items():
        now = sum(s[key] for s in last) / len(last)
        bound = first[key] * factor + allowance
        if now > bound:
            failures.append(f"{key} grew from {first[key]} (minute 1) to {now:.0f} (bound {bound:.0f})")
    rates = [b["drops"] - a["drops"] for a, b in zip(samples, samples[1:])]
    if len(rates) >= 2:
        factor, allowance = DROP_RATE_SLACK
        first_rate = max(rates[0], samples[0]["drops"])
        if rates[-1] > first_rate * factor + allowance:
            failures.append(f"drops per minute rose from {first_rate} to {rates[-1]}")
    return failures


async def main() -> int:
    minutes = int(os.environ.get("MINUTES", "10"))
    if minutes < 2:
        raise SystemExit("soak: MINUTES must be at least 2 (minute 1 is the reference)")
    binary = os.environ["FANWIRE_BIN"]
    server = Server(binary)
    rng = random.Random(int(os.environ.get("SEED", "1")))
    tally = Tally()
    start = time.monotonic()
    deadline = start + 60 * minutes
    tasks = [asyncio.create_task(churner(server, deadline, random.Random(rng.random()), tally)) for _ in range(30)]
    tasks += [asyncio.create_task(reader(server, deadline, 0, tally)) for _ in range(5)]
    tasks += [asyncio.create_task(reader(server, deadline, 0.05, tally)) for _ in range(2)]
    tasks += [asyncio.create_task(never_reader(server, deadline)) for _ in range(2)]
    tasks += [asyncio.create_task(publisher(server, deadline, random.Random(rng.random()), tally))]
    samples = []
    failures: list[str] = []
    try:
        for minute in range(1, minutes + 1):
            await asyncio.sleep(max(0.0, start + 60 * minute - time.monotonic()))
            if server.process.poll() is not None:
                failures.append(f"fanwire exited with {server.process.returncode}")
                break
            samples.append(await sample(server))
            print(line(minute, samples[-1], tally), flush=True)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
        # Load stopped: every count must come back to 0.
        settle_deadline = time.monotonic() + 60
        while time.monotonic() < settle_deadline:
            end = await sample(server)
            if end["connections"] == end["subscriptions"] == end["groups"] == 0:
                break
            await asyncio.sleep(0.5)
        print(line("end (load stopped)", end, tally), flush=True)
        if end["connections"] or end["subscriptions"] or end["groups"]:
            failures.append(f"counts did not return to 0 after the load: {end}")
        if len(samples) == minutes:
            failures += verdict(samples)
    finally:
        server.stop()
    panics = [l.rstrip() for l in server.stderr if "panicked" in l]
    if panics:
        failures.append("the server logged panics: " + "; ".join(panics[:5]))
    real = [u for u in tally.unexpected if "publish" in u or "reader closed" in u]
    if tally.unexpected:
        print(f"soak: {len(tally.unexpected)} unexpected client events, first: {tally.unexpected[:5]}")
    if real:
        failures.append(f"{len(real)} failed publishes or fast readers closed by the server")
    for failure in failures:
        print(f"soak: FAIL: {failure}")
    print("soak: passed" if not failures else "soak: FAILED", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
