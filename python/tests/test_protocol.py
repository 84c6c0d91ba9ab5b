"""Close codes and control messages reach the client through every serving
mode: the adapters pass the Rust connection's decisions through unchanged."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from conftest import MODES, guard, serve, until
from fanwire import SubscriptionConfig, SubscriptionManager

SCHEMA = "type Query { ok: Boolean } type T { a: Int } type Subscription { t: T }"


async def open_ws(url: str, protocol: str = "graphql-transport-ws") -> ClientConnection:
    return await guard(connect(url, subprotocols=[Subprotocol(protocol)]), "the upgrade")


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Reads until the server's close frame; its code and reason."""

    async def read_to_close() -> None:
        while True:
            await ws.recv()

    try:
        await guard(read_to_close(), "the server's close frame")
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server sent no close frame"
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable: read_to_close only ends by raising")


async def served(mode: str, stack: AsyncExitStack) -> str:
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(init_timeout_ms=300))
    return (await serve(manager, mode, stack)).url


def msg(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize("mode", MODES)
async def test_close_codes(mode: str, stack: AsyncExitStack) -> None:
    url = await served(mode, stack)

    ws = await open_ws(url, "not-graphql")
    assert ws.subprotocol == "not-graphql", "the offer is echoed so the client sees why"
    assert await closed_with(ws) == (4406, "Subprotocol not acceptable")

    ws = await open_ws(url)
    assert await closed_with(ws) == (4408, "Connection initialisation timeout")

    ws = await open_ws(url)
    await ws.send(msg(type="connection_init"))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    await ws.send(msg(type="connection_init"))
    assert await closed_with(ws) == (4429, "Too many initialisation requests")

    ws = await open_ws(url)
    await ws.send(msg(id="1", type="subscribe", payload={"query": "subscription { t { a } }"}))
    assert await closed_with(ws) == (4401, "Unauthorized")

    ws = await open_ws(url)
    await ws.send("{not json")
    code, reason = await closed_with(ws)
    assert code == 4400 and "JSON" in reason

    ws = await open_ws(url)
    await ws.send(b"\x00binary")
    assert (await closed_with(ws))[0] == 4400

    ws = await open_ws(url)
    await ws.send(msg(type="connection_init"))
    assert json.loads(await guard(ws.recv(), "ack")) == {"type": "connection_ack"}
    await ws.send(msg(id="1", type="subscribe", payload={"query": "subscription { t { a } }"}))
    await ws.send(msg(id="1", type="subscribe", payload={"query": "subscription { t { a } }"}))
    assert await closed_with(ws) == (4409, "Subscriber for 1 already exists")


# The Rust server's own 1009 path is tested in engine/server; these are the
# Python-held sockets, where the handler's size check decides.
@pytest.mark.parametrize("mode", ["fastapi", "starlette", "custom"])
async def test_oversized_message_closes_1009(mode: str, stack: AsyncExitStack) -> None:
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(max_message_bytes=1024, max_document_bytes=512))
    url = (await serve(manager, mode, stack)).url
    ws = await open_ws(url)
    await ws.send(msg(type="connection_init"))
    assert json.loads(await guard(ws.recv(), "ack")) == {"type": "connection_ack"}
    # Within the limit: answered.
    await ws.send(msg(type="ping", payload={"pad": "x" * 900}))
    assert json.loads(await guard(ws.recv(), "pong"))["type"] == "pong"
    await ws.send(msg(type="ping", payload={"pad": "x" * 1100}))
    code, reason = await closed_with(ws)
    assert code == 1009 and "exceeds the limit of 1024" in reason, (code, reason)
    await until("the connection to be gone", lambda: manager.stats()["connections"] == 0)


@pytest.mark.parametrize("mode", MODES)
async def test_ping_pong_and_errors_without_close(mode: str, stack: AsyncExitStack) -> None:
    url = await served(mode, stack)
    ws = await open_ws(url)
    await ws.send(msg(type="connection_init"))
    assert json.loads(await guard(ws.recv(), "ack")) == {"type": "connection_ack"}
    await ws.send(msg(type="ping", payload={"n": 1}))
    assert json.loads(await guard(ws.recv(), "pong")) == {"type": "pong", "payload": {"n": 1}}
    await ws.send(msg(id="x", type="subscribe", payload={"query": "subscription { nope }"}))
    error = json.loads(await guard(ws.recv(), "error"))
    assert error["type"] == "error" and error["id"] == "x"
    assert error["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    await ws.send(msg(type="ping"))
    assert json.loads(await guard(ws.recv(), "pong")) == {"type": "pong"}
    await ws.close()


@pytest.mark.parametrize("mode", MODES)
async def test_legacy_keep_alive_and_terminate(mode: str, stack: AsyncExitStack) -> None:
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(keep_alive_ms=100))
    url = (await serve(manager, mode, stack)).url
    ws = await open_ws(url, "graphql-ws")
    await ws.send(msg(type="connection_init"))
    assert json.loads(await guard(ws.recv(), "ack")) == {"type": "connection_ack"}
    assert json.loads(await guard(ws.recv(), "ka")) == {"type": "ka"}
    assert json.loads(await guard(ws.recv(), "a periodic ka")) == {"type": "ka"}
    await ws.send(msg(type="connection_terminate"))
    assert (await closed_with(ws))[0] == 1000


@pytest.mark.parametrize("mode", MODES)
async def test_expired_credentials_close_4403(mode: str, stack: AsyncExitStack) -> None:
    import time

    from fanwire import Principal

    manager = SubscriptionManager(SCHEMA)

    @manager.connection_policy
    def short_lived(params: dict[str, Any], headers: dict[str, str]) -> Principal:
        # Whole seconds: +1 could leave a millisecond between this call and
        # the engine's check at init; +2 leaves at least one.
        return Principal("u", expires_at=int(time.time()) + 2)

    url = (await serve(manager, mode, stack)).url
    ws = await open_ws(url)
    await ws.send(msg(type="connection_init"))
    assert json.loads(await guard(ws.recv(), "ack")) == {"type": "connection_ack"}
    assert await closed_with(ws) == (4403, "Authentication expired")
