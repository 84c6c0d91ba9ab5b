"""Fanwire in a FastAPI app: ``pip install './python[fastapi]'``, then
``python fastapi_example.py`` and open http://127.0.0.1:8000/.

The ASGI server (uvicorn) holds the sockets; the Rust engine holds the
protocol state, the subscriptions and each client's queue. ``POST /orders``
is an ordinary endpoint that publishes an event, as application code would.

Run several copies as one cluster with ``FANWIRE_BUS=nats://127.0.0.1:4222``
(or ``redis://127.0.0.1:6379``): an order posted to any copy reaches the
clients of all of them, and of ``fanwire serve --bus`` nodes too.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from fanwire import BusConfig, Context, SubscriptionConfig, SubscriptionManager
from fanwire.integrations.fastapi import SubscriptionRouterFactory

SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! cents: Int! total: Float! }
type Subscription {
  orderCreated(tenantId: ID!): Order!
}
"""

bus = BusConfig.from_url(os.environ.get("FANWIRE_BUS", "memory"))
manager = SubscriptionManager(schema=SCHEMA, config=SubscriptionConfig(resolver_timeout_ms=2000, bus=bus))


@manager.subscription("orderCreated", topic="orders:{tenantId}")
async def order_created(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
    """Runs once per group of identical subscriptions per event, on uvicorn's loop."""
    data: dict[str, Any] = event["data"]
    return {**data, "total": data["cents"] / 100}


class NewOrder(BaseModel):
    """What a client posts to create an order."""

    tenant_id: int
    cents: int


app = FastAPI(title="fanwire + FastAPI")
app.include_router(SubscriptionRouterFactory.create(manager, path="/graphql"))
ids = itertools.count(1)


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    """The browser client."""
    return Path(__file__).with_name("client.html").read_text()


@app.post("/orders")
async def create_order(order: NewOrder) -> dict[str, int]:
    """Stores nothing; publishes the event subscribers of that tenant receive."""
    event = {"id": next(ids), "cents": order.cents, "tenant_id": order.tenant_id}
    delivered = await manager.publish(f"orders:{order.tenant_id}", event)
    return {"id": event["id"], "delivered_now": delivered}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fanwire FastAPI example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"open http://{args.host}:{args.port}/ and POST /orders, e.g.\n"
          f"  curl -X POST http://{args.host}:{args.port}/orders -H 'content-type: application/json' "
          "-d '{\"tenant_id\": 5, \"cents\": 1999}'", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio")
