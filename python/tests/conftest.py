"""Fixtures: a manager with resolvers that tests steer, served each of the
three ways (the in-process Rust server, FastAPI or Starlette on uvicorn, and
the custom ``websockets`` example), and gql clients over both subprotocols.

Every wait is bounded only as a hang breaker: tests wait for states, never
for time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from gql.transport.websockets import WebsocketsTransport

from fanwire import SubscriptionManager

ROOT = Path(__file__).resolve().parents[2]
GUARD_SECONDS = 20.0
T = TypeVar("T")

PROTOCOLS = [
    pytest.param(WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, id="graphql-transport-ws"),
    pytest.param(WebsocketsTransport.APOLLO_SUBPROTOCOL, id="graphql-ws-legacy"),
]
MODES = ["rust", "fastapi", "starlette", "custom"]


async def guard(awaitable: Awaitable[T], what: str) -> T:
    """Awaits `awaitable`, failing the test if it never finishes."""
    try:
        return await asyncio.wait_for(awaitable, GUARD_SECONDS)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


async def until(what: str, condition: Callable[[], bool]) -> None:
    """Polls `condition` until it holds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await guard(poll(), what)


async def until_async(what: str, condition: Callable[[], Awaitable[bool]]) -> None:
    """Polls the awaitable `condition` (an HTTP request, a query) until it holds."""

    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.02)

    await guard(poll(), what)


def load_example(name: str, file: str) -> Any:
    """Imports an example module by path (examples are not a package)."""
    path = ROOT / "examples" / name / file
    spec = importlib.util.spec_from_file_location(f"example_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Served:
    """A manager being served: where to connect."""

    manager: SubscriptionManager
    url: str


async def _uvicorn(app: Any, stack: AsyncExitStack) -> int:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio", lifespan="on"
    )
    server = uvicorn.Server(config)
    # Serving on the test's own loop: async resolvers run where the app runs.
    task = asyncio.create_task(server.serve(sockets=None))

    async def stop() -> None:
        server.should_exit = True
        await guard(task, "uvicorn to stop")

    stack.push_async_callback(stop)
    await until("uvicorn to start", lambda: server.started or task.done())
    if task.done():
        task.result()
    sockets = [s for srv in server.servers for s in srv.sockets]
    port: int = sockets[0].getsockname()[1]
    return port


async def serve(manager: SubscriptionManager, mode: str, stack: AsyncExitStack) -> Served:
    """Serves `manager` in `mode` until `stack` closes, then closes the
    manager (its bus, sources and plugin watcher)."""
    stack.push_async_callback(manager.close)
    if mode == "rust":
        running = await manager.start("127.0.0.1", 0)
        stack.push_async_callback(running.stop)
        return Served(manager, f"ws://127.0.0.1:{running.port}/graphql")
    if mode == "fastapi":
        from fastapi import FastAPI

        from fanwire.integrations.fastapi import SubscriptionRouterFactory

        fastapi_app = FastAPI()
        fastapi_app.include_router(SubscriptionRouterFactory.create(manager, path="/graphql"))
        return Served(manager, f"ws://127.0.0.1:{await _uvicorn(fastapi_app, stack)}/graphql")
    if mode == "starlette":
        from starlette.applications import Starlette

        from fanwire.integrations.starlette import create_subscription_app

        app = create_subscription_app(Starlette(), manager)
        return Served(manager, f"ws://127.0.0.1:{await _uvicorn(app, stack)}/graphql")
    if mode == "custom":
        example = load_example("subscriptions-custom", "custom_server_example.py")
        from websockets.asyncio.server import serve as ws_serve

        server = await ws_serve(
            example.handler_for(manager),
            "127.0.0.1",
            0,
            select_subprotocol=example.choose_subprotocol,
        )

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        stack.push_async_callback(stop)
        port = next(iter(server.sockets)).getsockname()[1]
        return Served(manager, f"ws://127.0.0.1:{port}/graphql")
    raise AssertionError(mode)


@pytest.fixture(autouse=True, scope="session")
def _private_plugin_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Plugins compile into a cache of this test run (the default cache
    folder is under `$XDG_CACHE_HOME`), never the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    """Closes what a test started (servers), in reverse order."""
    async with AsyncExitStack() as s:
        yield s


def transport(url: str, protocol: str, init: dict[str, Any] | None = None) -> WebsocketsTransport:
    """A gql transport speaking `protocol`."""
    return WebsocketsTransport(url=url, subprotocols=[protocol], init_payload=init or {})


class RawClient:
    """A bare graphql-transport-ws client (the `websockets` library), for
    asserting exact frames, including `next` payloads that carry errors."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str, init: dict[str, Any] | None = None) -> RawClient:
        from websockets.asyncio.client import connect

        conn = await guard(connect(url, subprotocols=["graphql-transport-ws"]), "the upgrade")  # type: ignore[list-item]
        client = cls(conn)
        await client.send({"type": "connection_init", "payload": init or {}})
        assert await client.recv() == {"type": "connection_ack"}
        return client

    async def send(self, message: dict[str, Any]) -> None:
        import json

        await self.conn.send(json.dumps(message))

    async def recv(self) -> dict[str, Any]:
        import json

        message: dict[str, Any] = json.loads(await guard(self.conn.recv(), "a frame"))
        return message

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})

    async def close(self) -> None:
        await self.conn.close()
