"""The examples serve their page and deliver orders to a gql client."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import AsyncExitStack
from typing import Any

import pytest
from gql import Client, GraphQLRequest

from conftest import _uvicorn, guard, load_example, transport, until

ORDERS = GraphQLRequest(
    "subscription ($t: ID!) { orderCreated(tenantId: $t) { id total } }", variable_values={"t": "5"}
)


def http(method: str, url: str, body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, response.read().decode()


async def test_fastapi_example(stack: AsyncExitStack) -> None:
    example = load_example("subscriptions-fastapi", "fastapi_example.py")
    port = await _uvicorn(example.app, stack)
    status, page = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/")
    assert status == 200 and "graphql-transport-ws" in page
    ws = transport(f"ws://127.0.0.1:{port}/graphql", "graphql-transport-ws")
    async with Client(transport=ws) as session:
        results = session.subscribe(ORDERS)
        first = asyncio.ensure_future(anext(results))
        await until("the subscription", lambda: example.manager.stats()["subscriptions"] == 1)
        status, body = await asyncio.to_thread(
            http, "POST", f"http://127.0.0.1:{port}/orders", {"tenant_id": 5, "cents": 1999}
        )
        # The node's dispatcher hands the async resolver to the loop and does
        # not wait for it: its result follows, uncounted.
        assert status == 200 and json.loads(body)["delivered_now"] == 0
        assert await guard(first, "the order") == {"orderCreated": {"id": "1", "total": 19.99}}
        await results.aclose()


async def test_starlette_example(stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example's own generator publishes on the topic asserted on below:
    # off, so only the test's event can arrive.
    monkeypatch.setenv("FANWIRE_EXAMPLE_INTERVAL", "0")
    example = load_example("subscriptions-starlette", "starlette_example.py")
    port = await _uvicorn(example.app, stack)
    status, page = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/")
    assert status == 200 and "graphql-transport-ws" in page
    ws = transport(f"ws://127.0.0.1:{port}/graphql", "graphql-transport-ws")
    async with Client(transport=ws) as session:
        results = session.subscribe(ORDERS)
        first = asyncio.ensure_future(anext(results))
        await until("the subscription", lambda: example.manager.stats()["subscriptions"] == 1)
        assert await example.manager.publish("orders:5", {"id": 3, "cents": 250}) == 1
        assert await guard(first, "the order") == {"orderCreated": {"id": "3", "total": 2.5}}
        await results.aclose()


async def test_custom_example_serves_its_page(stack: AsyncExitStack) -> None:
    example = load_example("subscriptions-custom", "custom_server_example.py")
    from websockets.asyncio.server import serve as ws_serve

    manager = example.build_manager()
    server = await ws_serve(
        example.handler_for(manager),
        "127.0.0.1",
        0,
        select_subprotocol=example.choose_subprotocol,
        process_request=example.serve_page,
    )

    async def stop() -> None:
        server.close()
        await guard(server.wait_closed(), "the custom example's server to close")

    stack.push_async_callback(stop)
    port = next(iter(server.sockets)).getsockname()[1]
    status, page = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/")
    assert status == 200 and "graphql-transport-ws" in page
