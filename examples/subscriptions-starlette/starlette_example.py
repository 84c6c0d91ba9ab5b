"""Fanwire in a Starlette app: ``pip install './python[starlette]'``, then
``python starlette_example.py`` and open http://127.0.0.1:8001/.

``create_subscription_app(app, manager)`` adds the ``/graphql`` WebSocket
route; a background task publishes an order for tenant 5 every second
(``FANWIRE_EXAMPLE_INTERVAL`` seconds; ``0`` turns it off, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from fanwire import Context, SubscriptionManager
from fanwire.integrations.starlette import create_subscription_app

SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! cents: Int! total: Float! }
type Subscription {
  orderCreated(tenantId: ID!): Order! @topic(name: "orders:{tenantId}")
}
"""

manager = SubscriptionManager(schema=SCHEMA)


@manager.subscription("orderCreated")
def order_created(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
    """A plain function works too: it runs where the event is dispatched."""
    data: dict[str, Any] = event["data"]
    return {**data, "total": data["cents"] / 100}


async def page(request: Request) -> HTMLResponse:
    """The browser client."""
    return HTMLResponse(Path(__file__).with_name("client.html").read_text())


async def stats(request: Request) -> JSONResponse:
    """Live connections, subscriptions and resolver outcomes."""
    return JSONResponse(manager.stats())


async def generate_orders(interval: float) -> None:
    """A stand-in for the application: an order for tenant 5 every `interval` seconds."""
    for n in itertools.count(1):
        await manager.publish("orders:5", {"id": n, "cents": random.randint(100, 9999)})
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    interval = float(os.environ.get("FANWIRE_EXAMPLE_INTERVAL", "1.0"))
    if interval <= 0:
        yield
        return
    task = asyncio.create_task(generate_orders(interval))
    yield
    task.cancel()
    # Awaited so that shutdown leaves no task behind.
    with contextlib.suppress(asyncio.CancelledError):
        await task


app = create_subscription_app(
    Starlette(routes=[Route("/", page), Route("/stats", stats)], lifespan=lifespan), manager
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fanwire Starlette example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    print(f"open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio")
