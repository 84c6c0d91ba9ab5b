"""Each serving mode end to end with gql over both subprotocols:
connection policy -> subscribe -> publish -> resolver -> projected frame."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import AsyncExitStack
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from conftest import MODES, PROTOCOLS, guard, serve, transport, until
from fanwire import ConnectionRejected, Context, Principal, SubscriptionManager

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL

SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! cents: Int! total: Float who: String tenant: String token: String op: String }
type Subscription {
  orderCreated(tenantId: ID!): Order
}
"""

ORDERS = """
subscription OnOrder($t: ID!) {
  orderCreated(tenantId: $t) { __typename orderId: id total who tenant token op }
}
"""


def close_code(error: BaseException | None) -> tuple[int, str] | None:
    """The close frame the server sent, found in gql's exception chain."""
    while error is not None:
        if isinstance(error, ConnectionClosed) and error.rcvd is not None:
            return error.rcvd.code, error.rcvd.reason
        error = error.__cause__ or error.__context__
    return None


def build_manager() -> SubscriptionManager:
    manager = SubscriptionManager(schema=SCHEMA)

    @manager.connection_policy
    def policy(params: dict[str, Any], headers: dict[str, str]) -> Principal:
        if params.get("token") != "secret":
            raise ConnectionRejected("bad token")
        return Principal("alice", tenant="5", roles=["order:read"])

    @manager.subscription("orderCreated", topic="orders:{tenantId}")
    async def order_created(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
        await asyncio.sleep(0)  # really suspends: the result arrives from a task
        data = event["data"]
        return {
            **data,
            "total": data["cents"] / 100,
            "who": context.principal.subject,
            "tenant": context.principal.tenant,
            "token": context.connection_params["token"],
            "op": f"{context.operation_name}:{variables['t']}",
        }

    return manager


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_publish_resolve_project_deliver(mode: str, protocol: str, stack: AsyncExitStack) -> None:
    served = await serve(build_manager(), mode, stack)
    manager = served.manager
    ws = transport(served.url, protocol, {"token": "secret"})
    async with Client(transport=ws) as session:
        assert ws.subprotocol == protocol
        results = session.subscribe(GraphQLRequest(ORDERS, variable_values={"t": "5"}))
        first = asyncio.ensure_future(anext(results))
        await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)

        assert await manager.publish("orders:6", {"id": 0, "cents": 1}) == 0
        await manager.publish("orders:5", {"id": 1, "cents": 1999, "secret": "not selected"})
        manager.publish_nowait("orders:5", {"id": 2, "cents": 5})

        assert await guard(first, "the first result") == {
            "orderCreated": {
                "__typename": "Order",
                "orderId": "1",
                "total": 19.99,
                "who": "alice",
                "tenant": "5",
                "token": "secret",
                "op": "OnOrder:5",
            }
        }
        second = await guard(anext(results), "the second result")
        assert second["orderCreated"]["orderId"] == "2"

        await results.aclose()  # sends complete (legacy: stop)
        await until("the complete", lambda: manager.stats()["subscriptions"] == 0)
    await until("the disconnect", lambda: manager.stats()["connections"] == 0)
    assert manager.stats()["resolver_calls"] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_rejected_connection_and_invalid_subscription(mode: str, stack: AsyncExitStack) -> None:
    served = await serve(build_manager(), mode, stack)
    with pytest.raises(Exception) as refused:
        async with Client(transport=transport(served.url, TRANSPORT_WS, {"token": "wrong"})):
            pass
    assert close_code(refused.value) == (4403, "bad token")

    async with Client(transport=transport(served.url, TRANSPORT_WS, {"token": "secret"})) as session:
        with pytest.raises(TransportQueryError) as invalid:
            async for _ in session.subscribe(GraphQLRequest("subscription { orderCreated(tenantId: 1) { nope } }")):
                pass
        assert "GRAPHQL_VALIDATION_FAILED" in str(invalid.value)
    await until("the disconnect", lambda: served.manager.stats()["connections"] == 0)


async def test_rust_server_publish_endpoint_runs_async_resolvers_on_the_app_loop(
    stack: AsyncExitStack,
) -> None:
    """Events from the Rust server's own POST /publish arrive on a runtime
    thread; the async resolver still runs as a task on this loop."""
    manager = build_manager()
    served = await serve(manager, "rust", stack)
    port = served.url.split(":")[2].split("/")[0]
    ws = transport(served.url, TRANSPORT_WS, {"token": "secret"})
    async with Client(transport=ws) as session:
        results = session.subscribe(GraphQLRequest(ORDERS, variable_values={"t": "5"}))
        first = asyncio.ensure_future(anext(results))
        await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)

        def post() -> Any:
            body = json.dumps({"topic": "orders:5", "data": {"id": 9, "cents": 100}}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/publish", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=20) as response:
                return json.loads(response.read())

        reply = await asyncio.to_thread(post)
        assert reply["accepted"] == 1
        result = await guard(first, "the result")
        assert result["orderCreated"]["orderId"] == "9"
        assert result["orderCreated"]["total"] == 1.0
        await results.aclose()
