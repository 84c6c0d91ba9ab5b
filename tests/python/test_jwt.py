"""gql's WebsocketsTransport sending a JWT to the fanwire binary served with
`[auth.jwt]` (HS256).

The transport is in its default configuration (no subprotocol named) plus the
one option gql's docs give for websocket authentication, in either of their
two ways: `init_payload={"Authorization": token}` (the connection_init
payload) or `headers={"Authorization": token}` (the upgrade request). A valid
token receives events; a wrongly signed or expired one is refused with close
4403 and the policy's reason, which gql raises as TransportConnectionFailed
caused by websockets' ConnectionClosed carrying that close frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportConnectionFailed
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from harness import Server, fanwire_bin, guard

SECRET = "e2e-python-hs256-secret"
ORDERS = "subscription ($t: ID!) { orderCreated(tenantId: $t) { id cents } }"


def sign(claims: dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 JWT over `claims`, as any JWT library would sign it."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT"}
    body = part(json.dumps(header).encode()) + "." + part(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return body + "." + part(signature)


def with_init_payload(server: Server, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(url=server.ws_url, init_payload={"Authorization": token})


def with_headers(server: Server, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(url=server.ws_url, headers={"Authorization": token})


WAYS = [
    pytest.param(with_init_payload, id="init_payload"),
    pytest.param(with_headers, id="headers"),
]

Way = Callable[[Server, str], WebsocketsTransport]


@pytest.fixture
def jwt_server(tmp_path: Path) -> Iterator[Server]:
    """A fresh fanwire server that verifies HS256 tokens at connection_init."""
    config = tmp_path / "fanwire.toml"
    config.write_text(f'[auth.jwt]\nalgorithm = "HS256"\nsecret = "{SECRET}"\n')
    srv = Server(fanwire_bin(), config)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("way", WAYS)
async def test_a_valid_token_receives_events(jwt_server: Server, way: Way) -> None:
    token = sign({"sub": "ada", "tenant_id": "t-jwt", "exp": int(time.time()) + 3600})
    async with Client(transport=way(jwt_server, token)) as session:
        results = session.subscribe(GraphQLRequest(ORDERS, variable_values={"t": "t-jwt"}))
        first = asyncio.ensure_future(anext(results))  # sends the subscribe
        await jwt_server.wait_metric("fanwire_subscriptions", 1)
        order = {"topic": "orders:t-jwt", "data": {"id": "j-1", "cents": 42}}
        published = await jwt_server.publish(order)
        assert published == {"accepted": 1, "deliveries": 1}
        assert await guard(first, "the result") == {"orderCreated": {"id": "j-1", "cents": 42}}
        await results.aclose()


REFUSED = [
    pytest.param(
        lambda: sign({"sub": "eve", "exp": int(time.time()) + 3600}, secret="not-the-secret"),
        "Invalid token signature",
        id="wrongly-signed",
    ),
    pytest.param(
        lambda: sign({"sub": "ada", "exp": int(time.time()) - 600}),
        "Token expired",
        id="expired",
    ),
]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("token", "reason"), REFUSED)
async def test_a_bad_token_is_refused_with_4403(
    jwt_server: Server, way: Way, token: Callable[[], str], reason: str
) -> None:
    async def connect() -> None:
        async with Client(transport=way(jwt_server, token())):
            pytest.fail("a session opened with a bad token")

    with pytest.raises(TransportConnectionFailed) as failed:
        await guard(connect(), "the refusal")
    closed = failed.value.__cause__
    assert isinstance(closed, ConnectionClosed), repr(closed)
    assert closed.rcvd is not None, "the server sent a close frame"
    assert (closed.rcvd.code, closed.rcvd.reason) == (4403, reason)
    await jwt_server.wait_metric("fanwire_connections", 0)
