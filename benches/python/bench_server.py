"""A benchmark server speaking what the load generator expects, in one of
several stacks: `/graphql` (graphql-transport-ws) serving
`tick(topic) { seq ts pad }` and `POST /publish` taking one event or an array.

  python bench_server.py MODE --port P --schema ../schema.graphql

MODE: fanwire-rust (manager.serve: the Rust server in-process),
fanwire-fastapi, fanwire-starlette (uvicorn holds the sockets), or
strawberry (Strawberry's own graphql-transport-ws on FastAPI/uvicorn: the
Python server our users would otherwise pick). Each fanwire mode runs an
async pass-through resolver, so every event crosses into Python once per
group. Prints `fanwire listening on http://127.0.0.1:PORT` when ready.
"""

# No `from __future__ import annotations`: Strawberry reads the annotations
# of the types defined inside `strawberry_app` at runtime.
import argparse
import asyncio
import json
import socket
from collections.abc import AsyncGenerator
from typing import Any

import uvicorn

LISTENING = "fanwire listening on http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fanwire_manager(schema: str, passthrough: bool, max_backlog: int | None) -> Any:
    from fanwire import Context, SubscriptionConfig, SubscriptionManager

    # S1 outpaces its readers by design: the queue holds the whole burst (as in benches/run.sh).
    limits: dict[str, Any] = dict(
        queue_depth=16384, max_connections=12000, connections_per_second=100000.0, connection_burst=20000.0
    )
    if max_backlog is not None:
        limits["max_backlog"] = max_backlog
    manager = SubscriptionManager(schema, SubscriptionConfig(**limits))
    if passthrough:

        @manager.subscription("tick")
        async def tick(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
            data: dict[str, Any] = event["data"]
            return data

    return manager


def events_of(body: bytes) -> list[dict[str, Any]]:
    parsed = json.loads(body)
    return parsed if isinstance(parsed, list) else [parsed]


def asgi_publish_route(manager: Any) -> Any:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def publish(request: Request) -> JSONResponse:
        events = events_of(await request.body())
        deliveries = 0
        for e in events:
            deliveries += await manager.publish(e["topic"], e["data"])
        return JSONResponse({"accepted": len(events), "deliveries": deliveries})

    return publish


def strawberry_app(schema_sdl: str) -> Any:
    import strawberry
    from fastapi import FastAPI, Request
    from strawberry.fastapi import GraphQLRouter
    from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

    subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    @strawberry.type
    class Tick:
        seq: int
        ts: float
        pad: str | None

    @strawberry.type
    class Query:
        health: bool | None = None

    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def tick(self, topic: str) -> AsyncGenerator[Tick, None]:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            subscribers.setdefault(topic, set()).add(queue)
            try:
                while True:
                    d = await queue.get()
                    yield Tick(seq=d["seq"], ts=d["ts"], pad=d.get("pad"))
            finally:
                subscribers[topic].discard(queue)

    schema = strawberry.Schema(query=Query, subscription=Subscription)
    app = FastAPI()
    app.include_router(GraphQLRouter(schema, subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL]), prefix="/graphql")

    @app.post("/publish")
    async def publish(request: Request) -> dict[str, int]:
        events = events_of(await request.body())
        deliveries = 0
        for e in events:
            for q in subscribers.get(e["topic"], ()):
                q.put_nowait(e["data"])
                deliveries += 1
        return {"accepted": len(events), "deliveries": deliveries}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fanwire-rust", "fanwire-fastapi", "fanwire-starlette", "strawberry"])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-resolver", action="store_true", help="fanwire modes: project the event as is")
    parser.add_argument("--max-backlog", type=int, help="fanwire modes: limits.max_backlog (default: the engine's)")
    args = parser.parse_args()
    sdl = open(args.schema).read()
    port = args.port or free_port()

    if args.mode == "fanwire-rust":
        manager = fanwire_manager(sdl, not args.no_resolver, args.max_backlog)

        async def run() -> None:
            server = await manager.start("127.0.0.1", port)
            print(LISTENING.format(port=server.port), flush=True)
            await asyncio.Event().wait()

        asyncio.run(run())
        return

    if args.mode == "fanwire-fastapi":
        from fastapi import FastAPI

        from fanwire.integrations.fastapi import SubscriptionRouterFactory

        manager = fanwire_manager(sdl, not args.no_resolver, args.max_backlog)
        app: Any = FastAPI()
        app.include_router(SubscriptionRouterFactory.create(manager))
        app.add_api_route("/publish", asgi_publish_route(manager), methods=["POST"])
    elif args.mode == "fanwire-starlette":
        from starlette.applications import Starlette
        from starlette.routing import Route

        from fanwire.integrations.starlette import create_subscription_app

        manager = fanwire_manager(sdl, not args.no_resolver, args.max_backlog)
        app = create_subscription_app(
            Starlette(routes=[Route("/publish", asgi_publish_route(manager), methods=["POST"])]), manager
        )
    else:
        app = strawberry_app(sdl)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)

    async def run_uvicorn() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(LISTENING.format(port=port), flush=True)
        await task

    asyncio.run(run_uvicorn())


if __name__ == "__main__":
    main()
