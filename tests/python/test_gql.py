"""gql's WebsocketsTransport against the fanwire binary, over both subprotocols:
graphql-transport-ws and the legacy graphql-ws (subscriptions-transport-ws)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from harness import Server, guard

PROTOCOLS = [
    pytest.param(WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, id="graphql-transport-ws"),
    pytest.param(WebsocketsTransport.APOLLO_SUBPROTOCOL, id="graphql-ws-legacy"),
]

ORDERS = """
subscription OnOrder($tenant: ID!) {
  orderCreated(tenantId: $tenant) {
    __typename
    orderId: id
    cents
    status
    buyer: customer { name }
    items { sku qty }
  }
}
"""


def transport(server: Server, protocol: str) -> WebsocketsTransport:
    return WebsocketsTransport(url=server.ws_url, subprotocols=[protocol])


def order(tenant: str) -> GraphQLRequest:
    return GraphQLRequest(ORDERS, variable_values={"tenant": tenant})


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribe_receive_complete(server: Server, protocol: str) -> None:
    ws = transport(server, protocol)
    async with Client(transport=ws) as session:
        assert ws.subprotocol == protocol

        results = session.subscribe(order("t-py"))
        first = asyncio.ensure_future(anext(results))  # sends the subscribe
        await server.wait_metric("fanwire_subscriptions", 1)

        published = await server.publish(
            [
                {"topic": "orders:t-other", "data": {"id": "x", "cents": 1}},
                {
                    "topic": "orders:t-py",
                    "data": {
                        "id": "o-1",
                        "cents": 1999,
                        "status": "PAID",
                        "note": "not selected",
                        "customer": {"name": "Ada", "email": "ada@example.com"},
                        "items": [{"sku": "A-1", "qty": 2, "weight": 3}],
                    },
                },
                {
                    "topic": "orders:t-py",
                    "data": {
                        "id": "o-2",
                        "cents": 5,
                        "status": "SHIPPED",
                        "customer": {"name": "Bo"},
                        "items": [],
                    },
                },
            ]
        )
        assert published == {"accepted": 3, "deliveries": 2}

        assert await guard(first, "the first result") == {
            "orderCreated": {
                "__typename": "Order",
                "orderId": "o-1",
                "cents": 1999,
                "status": "PAID",
                "buyer": {"name": "Ada"},
                "items": [{"sku": "A-1", "qty": 2}],
            }
        }
        assert await guard(anext(results), "the second result") == {
            "orderCreated": {
                "__typename": "Order",
                "orderId": "o-2",
                "cents": 5,
                "status": "SHIPPED",
                "buyer": {"name": "Bo"},
                "items": [],
            }
        }

        # Closing the generator sends `complete` (or legacy `stop`).
        await results.aclose()
        await server.wait_metric("fanwire_subscriptions", 0)
        assert await server.publish({"topic": "orders:t-py", "data": {"id": "late"}}) == {
            "accepted": 1,
            "deliveries": 0,
        }


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_variables_and_argument_defaults(server: Server, protocol: str) -> None:
    ws = transport(server, protocol)
    async with Client(transport=ws) as session:
        default_venue = session.subscribe(
            GraphQLRequest(
                "subscription ($s: String!) { priceChanged(symbol: $s) { symbol last: price } }",
                variable_values={"s": "ACME"},
            )
        )
        london = session.subscribe(
            GraphQLRequest(
                "subscription ($s: String!, $v: String) "
                "{ priceChanged(symbol: $s, venue: $v) { last: price } }",
                variable_values={"s": "ACME", "v": "XLON"},
            )
        )
        from_default = asyncio.ensure_future(anext(default_venue))
        from_london = asyncio.ensure_future(anext(london))
        await server.wait_metric("fanwire_subscriptions", 2)

        published = await server.publish(
            [
                {"topic": "prices:XLON:ACME", "data": {"symbol": "ACME", "price": 7.25}},
                {"topic": "prices:XNYS:ACME", "data": {"symbol": "ACME", "price": 12.5}},
            ]
        )
        assert published == {"accepted": 2, "deliveries": 2}
        assert await guard(from_default, "the XNYS price") == {
            "priceChanged": {"symbol": "ACME", "last": 12.5}
        }
        assert await guard(from_london, "the XLON price") == {"priceChanged": {"last": 7.25}}

        await default_venue.aclose()
        await london.aclose()
        await server.wait_metric("fanwire_subscriptions", 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_validation_error_raises(server: Server, protocol: str) -> None:
    ws = transport(server, protocol)
    async with Client(transport=ws) as session:
        bad = GraphQLRequest(
            'subscription {\n  orderCreated(tenantId: "t-bad") {\n    id\n    nope\n  }\n}'
        )

        async def consume() -> list[Any]:
            return [result async for result in session.subscribe(bad)]

        with pytest.raises(TransportQueryError) as raised:
            await guard(consume(), "the validation error")

        errors = raised.value.errors
        assert errors is not None and len(errors) == 1, errors
        [error] = errors
        assert "nope" in error["message"] and "Order" in error["message"], error
        assert error["locations"] == [{"line": 4, "column": 5}]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await server.metric("fanwire_subscriptions") == 0

        # The connection survives the error: a valid subscribe on it works.
        results = session.subscribe(order("t-bad"))
        first = asyncio.ensure_future(anext(results))
        await server.wait_metric("fanwire_subscriptions", 1)
        published = await server.publish(
            {
                "topic": "orders:t-bad",
                "data": {
                    "id": "ok",
                    "cents": 1,
                    "status": "PENDING",
                    "customer": {"name": "C"},
                    "items": [],
                },
            }
        )
        assert published == {"accepted": 1, "deliveries": 1}
        assert (await guard(first, "the result after the error"))["orderCreated"]["orderId"] == "ok"
        await results.aclose()
        await server.wait_metric("fanwire_subscriptions", 0)


async def test_both_protocols_share_one_event(server: Server) -> None:
    """Identical subscriptions over the two subprotocols both receive the same result."""
    modern = transport(server, WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL)
    legacy = transport(server, WebsocketsTransport.APOLLO_SUBPROTOCOL)
    query = 'subscription { orderCreated(tenantId: "t-both") { id total: cents } }'
    async with Client(transport=modern) as a, Client(transport=legacy) as b:
        results_a = a.subscribe(GraphQLRequest(query))
        results_b = b.subscribe(GraphQLRequest(query))
        first_a = asyncio.ensure_future(anext(results_a))
        first_b = asyncio.ensure_future(anext(results_b))
        await server.wait_metric("fanwire_subscriptions", 2)

        published = await server.publish(
            {"topic": "orders:t-both", "data": {"id": "b-1", "cents": 42}}
        )
        assert published == {"accepted": 1, "deliveries": 2}
        expected = {"orderCreated": {"id": "b-1", "total": 42}}
        assert await guard(first_a, "the graphql-transport-ws result") == expected
        assert await guard(first_b, "the legacy result") == expected

        await results_a.aclose()
        await results_b.aclose()
        await server.wait_metric("fanwire_subscriptions", 0)
