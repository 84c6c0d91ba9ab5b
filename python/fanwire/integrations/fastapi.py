"""FastAPI: ``app.include_router(SubscriptionRouterFactory.create(manager))``.

The ASGI server holds the socket; the Rust engine holds the protocol state,
the subscriptions and the per-client queues, and hands back pre-serialised
frames. The router's lifespan (merged into the app's by ``include_router``)
opens the manager (bus, sources, plugins) at startup and closes it at
shutdown.
"""

from __future__ import annotations

try:
    from fastapi import APIRouter, WebSocket
except ImportError as err:  # pragma: no cover - exercised in a bare environment only
    raise ImportError(
        "fanwire.integrations.fastapi needs FastAPI: pip install 'fanwire[fastapi]'"
    ) from err

from fanwire.handler import GraphQLTransportWSHandler
from fanwire.integrations.starlette import StarletteWebSocketAdapter, manager_lifespan
from fanwire.manager import SubscriptionManager

__all__ = ["SubscriptionRouterFactory"]


class SubscriptionRouterFactory:
    """Builds FastAPI routers that serve a :class:`SubscriptionManager`."""

    @staticmethod
    def create(manager: SubscriptionManager, path: str = "/graphql") -> APIRouter:
        """A router with one WebSocket route at ``path`` and the manager in its lifespan."""
        router = APIRouter(lifespan=manager_lifespan(manager))

        async def graphql_ws(websocket: WebSocket) -> None:
            await GraphQLTransportWSHandler(manager, StarletteWebSocketAdapter(websocket)).handle()

        router.add_api_websocket_route(path, graphql_ws)
        return router
