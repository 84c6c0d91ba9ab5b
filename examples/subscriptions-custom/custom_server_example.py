"""Fanwire on a framework that is neither FastAPI nor Starlette: the plain
``websockets`` library. ``pip install './python[websockets]'``, run it with
``python custom_server_example.py`` and open http://127.0.0.1:8002/
(``--port`` changes the port).

All a framework needs is a :class:`fanwire.WebSocketAdapter` (a dozen lines
below); :class:`fanwire.GraphQLTransportWSHandler` does the rest, with the
protocol, subscriptions and queues in the Rust engine.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from fanwire import (
    Context,
    GraphQLTransportWSHandler,
    SubscriptionManager,
    WebSocketAdapter,
)
from fanwire.handler import WebSocketClosed

SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! cents: Int! total: Float! status: String! }
type Subscription {
  orderCreated(tenantId: ID!): Order!
}
"""

PAGE = Path(__file__).with_name("client.html")
GRAPHQL_SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")


class WebsocketsAdapter(WebSocketAdapter):
    """A ``websockets`` server connection as a :class:`WebSocketAdapter`."""

    def __init__(self, connection: ServerConnection) -> None:
        self._conn = connection

    @property
    def subprotocols(self) -> Sequence[str]:
        request = self._conn.request
        offered = request.headers.get_all("Sec-WebSocket-Protocol") if request else []
        return [p.strip() for value in offered for p in value.split(",") if p.strip()]

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        request = self._conn.request
        return list(request.headers.raw_items()) if request else []

    async def accept(self, subprotocol: str | None) -> None:
        # websockets completed the handshake (see `choose_subprotocol`).
        return None

    async def receive_text(self) -> str | bytes:
        try:
            return await self._conn.recv()
        except ConnectionClosed as closed:
            raise WebSocketClosed(closed.rcvd.code if closed.rcvd else 1006) from None

    async def receive_json(self) -> Any:
        return json.loads(await self.receive_text())

    async def send_bytes(self, data: bytes) -> None:
        # `text=True` sends the UTF-8 bytes as a text frame without decoding them.
        await self._conn.send(data, text=True)

    async def close(self, code: int, reason: str) -> None:
        await self._conn.close(code, reason)

    @property
    def is_connected(self) -> bool:
        return self._conn.state is State.OPEN


def choose_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Prefers graphql-transport-ws; echoes an unknown offer so the client sees the 4406."""
    for name in GRAPHQL_SUBPROTOCOLS:
        if name in offered:
            return Subprotocol(name)
    return offered[0] if offered else None


def build_manager() -> SubscriptionManager:
    """The example's schema and resolver."""
    manager = SubscriptionManager(schema=SCHEMA)

    @manager.subscription("orderCreated", topic="orders:{tenantId}")
    async def order_created(
        event: dict[str, Any], variables: dict[str, Any], context: Context
    ) -> dict[str, Any]:
        data: dict[str, Any] = event["data"]
        return {**data, "total": data["cents"] / 100}

    return manager


def handler_for(manager: SubscriptionManager) -> Any:
    """The ``websockets`` connection handler serving ``manager``."""

    async def handler(connection: ServerConnection) -> None:
        await GraphQLTransportWSHandler(manager, WebsocketsAdapter(connection)).handle()

    return handler


def serve_page(connection: ServerConnection, request: Request) -> Response | None:
    """Answers plain HTTP GET / with the client page; lets upgrades through."""
    if request.path == "/" and "Upgrade" not in request.headers:
        body = PAGE.read_bytes()
        headers = Headers({"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))})
        return Response(http.HTTPStatus.OK, "OK", headers, body)
    return None


async def publish_orders(manager: SubscriptionManager, interval: float) -> None:
    """A stand-in for the application: an order for tenant 5 now and then."""
    for n in itertools.count(1):
        await manager.publish("orders:5", {"id": n, "cents": random.randint(100, 9999), "status": "NEW"})
        await asyncio.sleep(interval)


async def main(host: str, port: int) -> None:
    manager = build_manager()
    async with serve(
        handler_for(manager),
        host,
        port,
        select_subprotocol=choose_subprotocol,
        process_request=serve_page,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"fanwire (websockets) on http://{bound[0]}:{bound[1]}/", flush=True)
        await publish_orders(manager, 1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
