"""The stock-client matrix's gql cells against the binary: `WebsocketsTransport`
as a newcomer writes it (no subprotocol named: gql offers both) and with each
subprotocol named. Each cell connects, subscribes, receives one published
event with the right data and closes cleanly. The other clients of the matrix
are in tests/node/matrix.test.mjs; the Python serving modes in
python/tests/test_client_matrix.py."""

from __future__ import annotations

import asyncio

import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from harness import Server, guard

QUERY = "subscription OnOrder($t: ID!) { orderCreated(tenantId: $t) { id cents } }"
ORDER = {"id": "m-1", "cents": 1999}
TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param(None, id="gql-default"),
        pytest.param([TRANSPORT_WS], id="gql-graphql-transport-ws"),
        pytest.param([LEGACY_WS], id="gql-graphql-ws"),
    ],
)
async def test_gql(server: Server, offered: list[str] | None) -> None:
    ws = (
        WebsocketsTransport(url=server.ws_url)
        if offered is None
        else WebsocketsTransport(url=server.ws_url, subprotocols=offered)
    )
    async with Client(transport=ws) as session:
        # Offered both, the server chooses graphql-transport-ws.
        assert ws.subprotocol == (offered or [TRANSPORT_WS])[0]
        results = session.subscribe(GraphQLRequest(QUERY, variable_values={"t": "matrix"}))
        first = asyncio.ensure_future(anext(results))  # sends the subscribe
        await server.wait_metric("fanwire_subscriptions", 1)

        published = await server.publish({"topic": "orders:matrix", "data": {**ORDER, "status": "PAID"}})
        assert published == {"accepted": 1, "deliveries": 1}
        assert await guard(first, "the result") == {"orderCreated": ORDER}

        await results.aclose()  # complete (legacy: stop)
        await server.wait_metric("fanwire_subscriptions", 0)
    await server.wait_metric("fanwire_connections", 0)
