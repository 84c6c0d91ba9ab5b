"""Stopping each serving mode closes its clients with the server's close
code, ends every connection and subscription, and leaves no asyncio task
and no Python thread behind. (``manager.serve``, which owns its loop, is
stopped with Ctrl-C in a process of its own by test_snippets.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from contextlib import AsyncExitStack

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from conftest import MODES, guard, serve, until
from fanwire import SubscriptionManager

SCHEMA = "type Query { ok: Boolean } type T { a: Int } type Subscription { t: T }"

# What a client sees when the server stops: 1001 (going away) from the Rust
# server and from `websockets`; uvicorn closes WebSockets itself with 1012
# (service restart) before the app's lifespan shutdown runs, so no ASGI app
# can choose the code.
CLOSES = {
    "rust": (1001, "Server shutting down"),
    "custom": (1001, ""),
    "fastapi": (1012, ""),
    "starlette": (1012, ""),
}


async def subscribed_client(url: str, manager: SubscriptionManager) -> ClientConnection:
    ws = await guard(connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]), "the upgrade")
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await guard(ws.recv(), "the ack")) == {"type": "connection_ack"}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "subscription { t { a } }"}}))
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    return ws


async def close_of(ws: ClientConnection) -> tuple[int, str]:
    """The server's close frame (reads to it, bounded)."""

    async def read_to_close() -> None:
        while True:
            await ws.recv()

    try:
        await guard(read_to_close(), "the server's close frame")
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server sent no close frame"
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable: read_to_close only ends by raising")


def others(test: asyncio.Task[object] | None) -> set[asyncio.Task[object]]:
    """Live tasks other than the test's and the one asking (`until` polls in a task of its own)."""
    return {t for t in asyncio.all_tasks() if t not in (test, asyncio.current_task()) and not t.done()}


@pytest.mark.parametrize("mode", MODES)
async def test_stopping_closes_clients_and_leaves_nothing_behind(mode: str) -> None:
    manager = SubscriptionManager(SCHEMA)
    test = asyncio.current_task()
    tasks_before = others(test)
    threads_before = set(threading.enumerate())
    async with AsyncExitStack() as server:
        url = (await serve(manager, mode, server)).url
        ws = await subscribed_client(url, manager)
        closing = asyncio.ensure_future(close_of(ws))
    # The server has stopped and the manager closed.
    assert await guard(closing, "the client's close") == CLOSES[mode]
    assert not manager.is_open
    stats = manager.stats()
    assert (stats["connections"], stats["subscriptions"]) == (0, 0), stats
    await until("the tasks the server started to end", lambda: others(test) <= tasks_before)
    assert set(threading.enumerate()) <= threads_before, set(threading.enumerate()) - threads_before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_cancelling_serve_async_closes_clients_with_1001() -> None:
    manager = SubscriptionManager(SCHEMA)
    port = _free_port()
    serving = asyncio.create_task(manager.serve_async("127.0.0.1", port))
    await until("serve_async to listen", lambda: manager.is_open or serving.done())

    async def connected() -> ClientConnection:
        while True:
            try:
                return await subscribed_client(f"ws://127.0.0.1:{port}/graphql", manager)
            except OSError:
                await asyncio.sleep(0.02)

    ws = await guard(connected(), "serve_async to accept a client")
    closing = asyncio.ensure_future(close_of(ws))
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await guard(serving, "serve_async to stop")
    assert await guard(closing, "the client's close") == (1001, "Server shutting down")
    assert not manager.is_open
    assert manager.stats()["connections"] == 0
