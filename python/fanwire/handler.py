"""Serving on any framework: a small socket interface and the handler that drives it.

The handler holds no protocol logic: the Rust connection decides every
reply and close code, and hands back complete, pre-serialised messages.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanwire._native import NativeConnection
    from fanwire.manager import SubscriptionManager

_log = logging.getLogger("fanwire")

#: The legacy subprotocol (subscriptions-transport-ws), which wants `ka` messages.
LEGACY_SUBPROTOCOL = "graphql-ws"

#: Sent when the client offers no subprotocol this server speaks.
SUBPROTOCOL_NOT_ACCEPTABLE = (4406, "Subprotocol not acceptable")


class WebSocketClosed(Exception):
    """Raised by :meth:`WebSocketAdapter.receive_text` once the peer has gone."""


class WebSocketAdapter(abc.ABC):
    """One accepted-or-about-to-be WebSocket, as some framework holds it.

    Implement the abstract members for your framework and pass an instance
    to :class:`GraphQLTransportWSHandler`. Override :meth:`receive_text`
    too when the framework gives raw text (saves a JSON round trip and
    keeps malformed frames visible to the protocol).
    """

    @property
    @abc.abstractmethod
    def subprotocols(self) -> Sequence[str]:
        """The subprotocols the client offered, in its order of preference."""

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        """The upgrade request's headers, for the connection policy."""
        return ()

    @abc.abstractmethod
    async def accept(self, subprotocol: str | None) -> None:
        """Completes the handshake, choosing ``subprotocol``."""

    @abc.abstractmethod
    async def receive_json(self) -> Any:
        """The next message, parsed; raises :class:`WebSocketClosed` once closed."""

    async def receive_text(self) -> str | bytes:
        """The next message as sent: ``str`` for a text frame, ``bytes`` for a
        binary one; raises :class:`WebSocketClosed` once closed."""
        try:
            return json.dumps(await self.receive_json())
        except ValueError:
            # Not JSON: hand the protocol something it will refuse with 4400.
            return "\x00"

    async def send_json(self, data: Any) -> None:
        """Sends ``data`` as a JSON text frame."""
        await self.send_bytes(json.dumps(data, separators=(",", ":")).encode())

    @abc.abstractmethod
    async def send_bytes(self, data: bytes) -> None:
        """Sends one complete, pre-serialised protocol message (UTF-8 JSON)
        as a *text* frame; GraphQL WebSocket clients ignore binary frames."""

    @abc.abstractmethod
    async def close(self, code: int, reason: str) -> None:
        """Sends a close frame with ``code`` and ``reason``."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool:
        """Whether frames can still be sent."""


class GraphQLTransportWSHandler:
    """Serves one client over ``graphql-transport-ws`` (or legacy ``graphql-ws``).

    ``await GraphQLTransportWSHandler(manager, adapter).handle()`` returns
    when the connection has ended; its subscriptions are gone by then.
    """

    def __init__(self, manager: SubscriptionManager, websocket: WebSocketAdapter) -> None:
        self._manager = manager
        self._ws = websocket

    async def handle(self) -> None:
        """Runs the connection to its end."""
        ws = self._ws
        native = self._manager._native
        loop = asyncio.get_running_loop()
        native.set_event_loop(loop)
        # Plugins (JWT, filters) must be in force before the first client.
        await self._manager.open()
        offered = list(ws.subprotocols)
        conn = native.connect(",".join(offered), list(ws.headers))
        if conn is None:
            # Accepting with the client's own offer lets it see why it is refused.
            await ws.accept(offered[0] if offered else None)
            await ws.close(*SUBPROTOCOL_NOT_ACCEPTABLE)
            return
        try:
            await ws.accept(conn.subprotocol)
            # One slot per timer, so a long-lived connection holds three handles at most.
            timers = {"init": loop.call_later(conn.init_timeout, conn.on_init_timeout)}

            def keep_alive() -> None:
                conn.on_keep_alive()
                timers["keep_alive"] = loop.call_later(conn.keep_alive, keep_alive)

            if conn.subprotocol == LEGACY_SUBPROTOCOL:
                # The legacy protocol's `ka` messages; WebSocket pings are the
                # framework's (uvicorn sends them itself).
                timers["keep_alive"] = loop.call_later(conn.keep_alive, keep_alive)
            reader = asyncio.create_task(self._read(conn, timers))
            writer = asyncio.create_task(self._write(conn))
            try:
                await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and conn.is_closed and ws.is_connected:
                    # The server is closing: let queued frames and the close go out.
                    await asyncio.wait({writer})
            finally:
                for timer in timers.values():
                    timer.cancel()
                for task in (reader, writer):
                    task.cancel()
                await asyncio.gather(reader, writer, return_exceptions=True)
        finally:
            conn.dispose()

    async def _read(self, conn: NativeConnection, timers: dict[str, asyncio.TimerHandle]) -> None:
        ws = self._ws
        while not conn.is_closed:
            try:
                message = await ws.receive_text()
            except WebSocketClosed:
                return
            if isinstance(message, str):
                conn.on_text(message)
            else:
                conn.on_binary()
            if "expiry" not in timers and conn.expires_at is not None:
                delay = max(0.0, conn.expires_at - time.time())
                timers["expiry"] = asyncio.get_running_loop().call_later(delay, conn.on_expired)

    async def _write(self, conn: NativeConnection) -> None:
        ws = self._ws
        while True:
            frames, close = conn.drain()
            try:
                for frame in frames:
                    await ws.send_bytes(frame)
                if close is not None:
                    await ws.close(*close)
                    return
            except Exception:
                # Usually the peer is gone, which the reader sees too.
                if ws.is_connected:
                    _log.exception("sending to a client failed; ending the connection")
                return
            await conn.ready()
