"""Starlette: the ASGI server holds the socket, the Rust engine the protocol.

``create_subscription_app(app, manager)`` adds a WebSocket route serving
``graphql-transport-ws`` and legacy ``graphql-ws`` to a Starlette app, and
opens the manager (bus, sources, plugins) for the app's lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

try:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketState
except ImportError as err:  # pragma: no cover - exercised in a bare environment only
    raise ImportError(
        "fanwire.integrations.starlette needs Starlette: pip install 'fanwire[starlette]'"
    ) from err

import json

from fanwire.handler import GraphQLTransportWSHandler, WebSocketAdapter, WebSocketClosed
from fanwire.manager import SubscriptionManager

__all__ = ["StarletteWebSocketAdapter", "create_subscription_app", "manager_lifespan", "subscription_endpoint"]


class StarletteWebSocketAdapter(WebSocketAdapter):
    """A Starlette (or FastAPI) ``WebSocket`` as a :class:`WebSocketAdapter`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    @property
    def subprotocols(self) -> Sequence[str]:
        offered: Sequence[str] = self._ws.scope.get("subprotocols", ())
        return offered

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._ws.scope["headers"]]

    async def accept(self, subprotocol: str | None) -> None:
        await self._ws.accept(subprotocol=subprotocol)

    async def receive_text(self) -> str | bytes:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketClosed(message.get("code", 1005))
        text: str | None = message.get("text")
        if text is not None:
            return text
        data: bytes = message.get("bytes") or b""
        return data

    async def receive_json(self) -> Any:
        message = await self.receive_text()
        return json.loads(message)

    async def send_bytes(self, data: bytes) -> None:
        # ASGI sends text frames from `str` only.
        await self._ws.send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)

    @property
    def is_connected(self) -> bool:
        return (
            self._ws.application_state == WebSocketState.CONNECTED
            and self._ws.client_state == WebSocketState.CONNECTED
        )


def subscription_endpoint(manager: SubscriptionManager) -> Any:
    """An ASGI WebSocket endpoint ``async (websocket) -> None`` serving ``manager``."""

    async def endpoint(websocket: WebSocket) -> None:
        await GraphQLTransportWSHandler(manager, StarletteWebSocketAdapter(websocket)).handle()

    return endpoint


def manager_lifespan(
    manager: SubscriptionManager,
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    """An ASGI lifespan that opens ``manager`` at startup (its bus, sources
    and plugins) and closes it at shutdown, around ``inner`` if given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with manager:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state

    return lifespan


def create_subscription_app(
    app: Starlette | None, manager: SubscriptionManager, path: str = "/graphql"
) -> Starlette:
    """Adds the subscription endpoint at ``path`` to ``app`` (a new app if None)
    and the manager to its lifespan, and returns it."""
    if app is None:
        app = Starlette()
    app.router.routes.append(WebSocketRoute(path, subscription_endpoint(manager)))
    app.router.lifespan_context = manager_lifespan(manager, app.router.lifespan_context)
    return app
