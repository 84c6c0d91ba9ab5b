"""Publishing from Python goes through the configured bus, as the host's
``POST /publish`` does: with NATS JetStream or Redis Streams, a Python
manager and a standalone ``fanwire`` process are two nodes of one cluster,
and each event reaches the clients of both exactly once, numbered alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal

import pytest
from gql import Client, GraphQLRequest
from graphql import ExecutionResult

from conftest import RawClient, guard, serve, transport, until, until_async
from fanwire import BusConfig, Context, PublishError, SubscriptionConfig, SubscriptionManager
from services import BROKER_URLS, drop_stream, host, in_thread, require, unique

TRANSPORT_WS = "graphql-transport-ws"
SCHEMA = """
type Query { ok: Boolean }
type Tick { n: Int! who: String }
type Subscription { tick(stream: String!): Tick @topic(name: "ticks:{stream}") }
"""
TICKS = 'subscription { tick(stream: "s") { n who } }'


def manager_on(bus: BusConfig) -> SubscriptionManager:
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(history_per_topic=100, bus=bus))

    @manager.subscription("tick")
    def tick(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
        return {**event["data"], "who": "python"}

    return manager


def host_config(kind: str, stream: str, folder: Path) -> str:
    (folder / "schema.graphql").write_text(SCHEMA)
    return f"""
[server]
schema = "{folder / "schema.graphql"}"
[limits]
history_per_topic = 100
[bus]
kind = "{kind}"
url = "{BROKER_URLS[kind]}"
stream = "{stream}"
subject = "{stream}.events"
"""


async def take(
    results: AsyncGenerator[ExecutionResult, None], count: int, what: str
) -> list[tuple[int, str | None, int, str]]:
    """The next `count` ticks as (n, who, seq, id)."""
    got = []
    for _ in range(count):
        result = await guard(anext(results), what)
        assert result.errors is None, result.errors
        assert result.data is not None and result.extensions is not None
        tick = result.data["tick"]
        got.append((tick["n"], tick["who"], result.extensions["seq"], result.extensions["id"]))
    return got


@pytest.mark.parametrize("kind", ["nats", "redis"])
@pytest.mark.parametrize("mode", ["rust", "fastapi"])
async def test_a_python_node_and_a_fanwire_node_share_events_exactly_once(
    kind: Literal["nats", "redis"], mode: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    require(kind)
    stream = unique("fwpy")
    stack.callback(drop_stream, kind, stream)
    manager = manager_on(BusConfig(kind=kind, url=BROKER_URLS[kind], stream=stream, subject=f"{stream}.events"))
    served = await serve(manager, mode, stack)
    assert manager.health()["bus"] == {"kind": kind, "state": "up", "queued": 0}
    node = stack.enter_context(host(host_config(kind, stream, tmp_path), tmp_path))

    async with (
        Client(transport=transport(node.ws_url, TRANSPORT_WS)) as on_host,
        Client(transport=transport(served.url, TRANSPORT_WS)) as on_python,
    ):
        from_host = on_host.subscribe(GraphQLRequest(TICKS), get_execution_result=True)
        from_python = on_python.subscribe(GraphQLRequest(TICKS), get_execution_result=True)
        first_host = asyncio.ensure_future(take(from_host, 1, "the host's first tick"))
        first_python = asyncio.ensure_future(take(from_python, 1, "the Python node's first tick"))
        await until("the Python subscription", lambda: manager.stats()["subscriptions"] == 1)

        async def host_subscribed() -> bool:
            return bool((await in_thread(node.get, "/healthz"))["subscriptions"] == 1)

        await until_async("the host's subscription (its /healthz)", host_subscribed)

        # Awaited: once the broker has stored it; delivered when read back.
        assert await manager.publish("ticks:s", {"n": 1}, id="e1") == 0
        host_ticks = await guard(first_host, "the host's first tick")
        python_ticks = await guard(first_python, "the Python node's first tick")
        # From a request handler: returns at once.
        assert manager.publish_nowait("ticks:s", {"n": 2}) == 0
        host_ticks += await take(from_host, 1, "n=2 on the host")
        python_ticks += await take(from_python, 1, "n=2 on the Python node")
        # From the other node, and a repeat of e1 that every node drops.
        assert await in_thread(node.publish, {"topic": "ticks:s", "data": {"n": 3}}) == (
            200,
            {"accepted": 1, "stored": True},
        )
        assert await manager.publish("ticks:s", {"n": 1}, id="e1") == 0
        assert await manager.publish("ticks:s", {"n": 4}) == 0
        host_ticks += await take(from_host, 2, "n=3, 4 on the host")
        python_ticks += await take(from_python, 2, "n=3, 4 on the Python node")
        await from_host.aclose()
        await from_python.aclose()

    assert [(n, who) for n, who, *_ in host_ticks] == [(1, None), (2, None), (3, None), (4, None)]
    assert [(n, who) for n, who, *_ in python_ticks] == [(1, "python"), (2, "python"), (3, "python"), (4, "python")]
    # Both nodes number each event with the broker's position, and carry
    # its id: the publisher's, or the one the accepting node gave it.
    assert [t[2:] for t in host_ticks] == [t[2:] for t in python_ticks]
    seqs = [seq for _, _, seq, _ in host_ticks]
    assert seqs == sorted(set(seqs))
    ids = [id_ for *_, id_ in host_ticks]
    assert ids[0] == "e1" and len(set(ids)) == 4, ids

    # A client that saw n=2 on one node resumes on the other, either way.
    resume = {"query": TICKS, "extensions": {"resumeFrom": host_ticks[1][2]}}
    on_host = await RawClient.open(node.ws_url)
    await on_host.send({"id": "r", "type": "subscribe", "payload": resume})
    for n, _, seq, id_ in host_ticks[2:]:
        frame = await on_host.recv()
        assert frame["payload"] == {"data": {"tick": {"n": n, "who": None}}, "extensions": {"seq": seq, "id": id_}}
    await on_host.close()
    on_python = await RawClient.open(served.url)
    await on_python.send({"id": "r", "type": "subscribe", "payload": resume})
    for n, _, seq, id_ in python_ticks[2:]:
        frame = await on_python.recv()
        # A replay goes through the resolver, as live events do.
        assert frame["payload"] == {"data": {"tick": {"n": n, "who": "python"}}, "extensions": {"seq": seq, "id": id_}}
    await on_python.close()


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_an_unreachable_broker_is_reported_and_a_full_buffer_refuses(kind: Literal["nats", "redis"]) -> None:
    # Nothing listens on port 9: the broker is down from the start.
    scheme = "nats" if kind == "nats" else "redis"
    manager = manager_on(BusConfig(kind=kind, url=f"{scheme}://127.0.0.1:9", buffer=2, startup_timeout_ms=100))
    with pytest.raises(PublishError, match="not running"):
        manager.publish_nowait("ticks:s", {"n": 0})
    async with manager:
        await until("the bus to report the outage", lambda: manager.health()["bus"]["state"] == "down")
        health = manager.health()
        assert health["status"] == "degraded"
        assert health["bus"]["error"]
        # Held in this node for the broker, up to `buffer` events.
        assert manager.publish_nowait("ticks:s", {"n": 1}) == 0
        assert await manager.publish("ticks:s", {"n": 2}) == 0
        assert manager.health()["bus"]["queued"] == 2
        with pytest.raises(PublishError, match="unreachable"):
            manager.publish_nowait("ticks:s", {"n": 3})
        with pytest.raises(PublishError, match="unreachable"):
            await manager.publish("ticks:s", {"n": 4})
        assert "fanwire_bus_up" in manager.metrics()
    assert not manager.is_open
    assert manager.health()["status"] == "closed"
