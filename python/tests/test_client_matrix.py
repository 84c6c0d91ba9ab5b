"""The stock-client matrix over the Python serving modes: every client in its
default configuration against ``manager.serve``'s Rust server, the FastAPI
and Starlette examples on uvicorn and the custom-adapter example (plain
``websockets``).

The Node clients (graphql-ws, Apollo Client, urql, subscriptions-transport-ws)
and the browser (headless Chromium on the mode's page) run as subprocesses of
``tests/node/matrix-client.mjs``, the same client code that
``tests/node/matrix.test.mjs`` runs against the standalone binary; gql runs
here. ``tests/node/setup.sh`` installs their packages and Chromium (check.sh
runs it). Each cell connects, subscribes, receives one published event with
the right data and closes cleanly; the table is in ``tests/README.md``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from conftest import ROOT, _uvicorn, guard, load_example, serve, until
from fanwire import SubscriptionManager

NODE_DIR = ROOT / "tests" / "node"
CLIENT_CLI = NODE_DIR / "matrix-client.mjs"
DEMO_SCHEMA = ROOT / "engine" / "server" / "src" / "demo" / "schema.graphql"

#: The subscription every cell runs (the Node side's `QUERY` in clients.mjs).
QUERY = "subscription OnOrder($t: ID!) { orderCreated(tenantId: $t) { id cents } }"
TENANT = "matrix"
ORDER = {"id": "m-1", "cents": 1999}

NODE_CLIENTS = ["graphql-ws", "apollo", "urql", "subscriptions-transport-ws"]
TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL
GQL_CLIENTS = {
    "gql-default": None,
    "gql-graphql-transport-ws": [TRANSPORT_WS],
    "gql-graphql-ws": [LEGACY_WS],
}
MODES = ["serve", "fastapi", "starlette", "custom"]
#: The most lines a client subprocess may print before the expected one (the
#: Starlette example publishes its own orders to the page's tenant).
MAX_LINES = 100


@dataclass
class Mode:
    """A serving mode that is up: where to connect, and how to publish what the page shows."""

    manager: SubscriptionManager
    ws_url: str
    page_url: str
    #: Publishes the event the mode's page shows and returns the text it shows it as.
    publish_for_page: Callable[[], Awaitable[str]]


def demo_manager() -> SubscriptionManager:
    """A manager on the demo schema, so the Rust server's page at `/` (the demo
    page, which subscribes to `tick`) has its field."""
    manager = SubscriptionManager(schema=DEMO_SCHEMA.read_text())

    @manager.subscription("orderCreated")
    def order_created(event: dict[str, Any], variables: dict[str, Any], context: Any) -> dict[str, Any]:
        data: dict[str, Any] = event["data"]
        return data

    @manager.subscription("tick")
    def tick(event: dict[str, Any], variables: dict[str, Any], context: Any) -> dict[str, Any]:
        data: dict[str, Any] = event["data"]
        return data

    return manager


def order_page_publisher(manager: SubscriptionManager) -> Callable[[], Awaitable[str]]:
    """The examples' client.html subscribes to tenant 5's orders and lists each."""

    async def publish() -> str:
        await manager.publish("orders:5", {"id": "m-7", "cents": 1999})
        return "order m-7: 1999 cents = 19.99"

    return publish


async def start(mode: str, stack: AsyncExitStack) -> Mode:
    """Serves `mode` until `stack` closes."""
    if mode == "serve":
        manager = demo_manager()
        # `manager.serve` is `start` plus waiting for Ctrl-C; `start` leaves the loop to the test.
        served = await serve(manager, "rust", stack)
        page = served.url.removesuffix("graphql")

        async def publish_tick() -> str:
            tick = {"seq": 7, "value": 4.5, "at": "matrix"}
            await manager.publish("ticks:demo", tick)
            return json.dumps({"data": {"tick": tick}}, separators=(",", ":"))

        return Mode(manager, served.url, page.replace("ws://", "http://"), publish_tick)
    if mode in ("fastapi", "starlette"):
        example = load_example(f"subscriptions-{mode}", f"{mode}_example.py")
        stack.push_async_callback(example.manager.close)
        port = await _uvicorn(example.app, stack)
        return Mode(
            example.manager,
            f"ws://127.0.0.1:{port}/graphql",
            f"http://127.0.0.1:{port}/",
            order_page_publisher(example.manager),
        )
    if mode == "custom":
        example = load_example("subscriptions-custom", "custom_server_example.py")
        from websockets.asyncio.server import serve as ws_serve

        manager = example.build_manager()
        stack.push_async_callback(manager.close)
        server = await ws_serve(
            example.handler_for(manager),
            "127.0.0.1",
            0,
            select_subprotocol=example.choose_subprotocol,
            process_request=example.serve_page,
        )

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        stack.push_async_callback(stop)
        port = next(iter(server.sockets)).getsockname()[1]
        return Mode(
            manager, f"ws://127.0.0.1:{port}/graphql", f"http://127.0.0.1:{port}/", order_page_publisher(manager)
        )
    raise AssertionError(mode)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the matrix's packages installed."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not on PATH: the client matrix runs the Node clients", pytrace=False)
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"no {NODE_DIR}/node_modules: run bash tests/node/setup.sh", pytrace=False)
    return path


class NodeClient:
    """A running `matrix-client.mjs` and the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stderr is not None
        self._stderr = asyncio.ensure_future(process.stderr.read())

    @classmethod
    async def start(cls, node: str, *args: str) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            node,
            str(CLIENT_CLI),
            *args,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def line(self, what: str) -> dict[str, Any]:
        """The next JSON line; fails with the client's stderr if it ended instead."""
        assert self.process.stdout is not None
        raw = await guard(self.process.stdout.readline(), what)
        if not raw:
            code = await guard(self.process.wait(), "the client to exit")
            stderr = (await guard(self._stderr, "the client's stderr")).decode()
            pytest.fail(f"the client exited ({code}) before {what}:\n{stderr}")
        line: dict[str, Any] = json.loads(raw)
        return line

    async def close(self) -> dict[str, Any]:
        """Asks the client to unsubscribe and close; returns its last line and checks its exit."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"close\n")
        await self.process.stdin.drain()
        closed = await self.line("the client's close report")
        code = await guard(self.process.wait(), "the client to exit")
        stderr = (await guard(self._stderr, "the client's stderr")).decode()
        assert code == 0, stderr
        return closed

    def kill(self) -> None:
        """For teardown after a failure: the process must not outlive the test."""
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def clients() -> AsyncIterator[list[NodeClient]]:
    """Node clients a test started; killed at the end if still running."""
    started: list[NodeClient] = []
    yield started
    for client in started:
        client.kill()
        await guard(client.process.wait(), "a killed client to exit")


async def disconnected(manager: SubscriptionManager) -> None:
    """Waits until the server holds no subscription and no connection."""
    await until(
        "no subscriptions and no connections",
        lambda: manager.stats()["subscriptions"] == 0 and manager.stats()["connections"] == 0,
    )


def expected(typename: bool) -> dict[str, Any]:
    order: dict[str, Any] = {"__typename": "Order", **ORDER} if typename else dict(ORDER)
    return {"data": {"orderCreated": order}}


@pytest.mark.parametrize("client", NODE_CLIENTS)
@pytest.mark.parametrize("mode", MODES)
async def test_node_client(
    mode: str, client: str, node: str, clients: list[NodeClient], stack: AsyncExitStack
) -> None:
    served = await start(mode, stack)
    proc = await NodeClient.start(node, client, served.ws_url, json.dumps({"t": TENANT}))
    clients.append(proc)
    header = await proc.line("the client's header")
    await until("the subscription", lambda: served.manager.stats()["subscriptions"] == 1)

    await served.manager.publish(f"orders:{TENANT}", ORDER)
    assert await proc.line("the result") == {"result": expected(header["typename"])}

    closed = await proc.close()
    assert closed["closed"] in header["cleanClose"], closed
    await disconnected(served.manager)


@pytest.mark.parametrize("mode", MODES)
async def test_browser_page(mode: str, node: str, clients: list[NodeClient], stack: AsyncExitStack) -> None:
    served = await start(mode, stack)
    proc = await NodeClient.start(node, "browser", served.page_url)
    clients.append(proc)
    await proc.line("the client's header")
    await until("the page's subscription", lambda: served.manager.stats()["subscriptions"] == 1)

    shown = await served.publish_for_page()
    seen = []
    # The demo page also logs its subscribe; the Starlette example publishes orders of its own.
    for _ in range(MAX_LINES):
        item = (await proc.line(f"the page to show {shown!r}"))["item"]
        seen.append(item)
        if item.endswith(shown):
            break
    else:
        pytest.fail(f"the page never showed {shown!r}; it showed {seen}")

    assert await proc.close() == {"closed": None}
    await disconnected(served.manager)


@pytest.mark.parametrize("client", GQL_CLIENTS)
@pytest.mark.parametrize("mode", MODES)
async def test_gql(mode: str, client: str, stack: AsyncExitStack) -> None:
    served = await start(mode, stack)
    offered = GQL_CLIENTS[client]
    ws = (
        WebsocketsTransport(url=served.ws_url)
        if offered is None
        else WebsocketsTransport(url=served.ws_url, subprotocols=offered)
    )
    async with Client(transport=ws) as session:
        # gql offers both by default; every mode prefers graphql-transport-ws.
        assert ws.subprotocol == (offered or [TRANSPORT_WS])[0]
        results = session.subscribe(GraphQLRequest(QUERY, variable_values={"t": TENANT}))
        first = asyncio.ensure_future(anext(results))  # sends the subscribe
        await until("the subscription", lambda: served.manager.stats()["subscriptions"] == 1)

        await served.manager.publish(f"orders:{TENANT}", ORDER)
        assert await guard(first, "the result") == {"orderCreated": ORDER}
        await results.aclose()  # complete (legacy: stop)
        await until("the complete", lambda: served.manager.stats()["subscriptions"] == 0)
    await disconnected(served.manager)
