"""WebAssembly plugins and JWT authentication configured from Python, in
force in every serving mode: the JWT decides ``connection_init`` (its
principal reaches the Python resolver), the tenant-isolation filter decides
which events each subscriber gets, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest

from conftest import MODES, guard, serve, transport, until
from fanwire import (
    ConfigError,
    Context,
    JwtAuth,
    Plugin,
    PluginRuntime,
    Principal,
    SubscriptionConfig,
    SubscriptionManager,
)
from services import plugin
from test_serving import close_code

SECRET = "s3cret-for-tests"
SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! tenant_id: ID seen_by: String }
type Subscription { orders: Order @topic(name: "orders:all") }
"""
ORDERS = "subscription { orders { id seen_by } }"


def token(claims: dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 JWT."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def user(subject: str, tenant: str, **extra: Any) -> dict[str, Any]:
    return {"token": token({"sub": subject, "tenant_id": tenant, "exp": int(time.time()) + 3600, **extra})}


def config(filter_path: Path) -> SubscriptionConfig:
    return SubscriptionConfig(
        jwt=JwtAuth(algorithm="HS256", secret=SECRET),
        plugins=[Plugin(filter_path, "event-filter", topics=["orders:*"])],
        plugin_runtime=PluginRuntime(watch_interval_ms=20),
    )


def build_manager(filter_path: Path) -> SubscriptionManager:
    manager = SubscriptionManager(SCHEMA, config(filter_path))

    @manager.subscription("orders")
    async def orders(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
        return {**event["data"], "seen_by": context.principal.subject}

    return manager


@pytest.mark.parametrize("mode", MODES)
async def test_jwt_and_tenant_isolation_decide_in_every_mode(mode: str, stack: AsyncExitStack) -> None:
    manager = build_manager(plugin("tenant-isolation.wasm"))
    served = await serve(manager, mode, stack)

    for init, reason in [
        ({}, "missing"),
        ({"token": token({"sub": "eve", "tenant_id": "5", "exp": int(time.time()) + 60}, "wrong")}, "signature"),
        ({"token": token({"sub": "eve", "tenant_id": "5", "exp": int(time.time()) - 600})}, "expired"),
    ]:
        with pytest.raises(Exception) as refused:
            async with Client(transport=transport(served.url, "graphql-transport-ws", init)):
                pass
        code = close_code(refused.value)
        assert code is not None and code[0] == 4403, (reason, code)

    async with (
        Client(transport=transport(served.url, "graphql-transport-ws", user("alice", "5"))) as alice,
        Client(transport=transport(served.url, "graphql-transport-ws", user("bob", "6"))) as bob,
    ):
        alice_orders = alice.subscribe(GraphQLRequest(ORDERS))
        bob_orders = bob.subscribe(GraphQLRequest(ORDERS))
        alice_first = asyncio.ensure_future(anext(alice_orders))
        bob_first = asyncio.ensure_future(anext(bob_orders))
        await until("both subscriptions", lambda: manager.stats()["subscriptions"] == 2)

        await manager.publish("orders:all", {"id": 1, "tenant_id": 5})
        await manager.publish("orders:all", {"id": 2, "tenant_id": 6})
        await manager.publish("orders:all", {"id": 3})  # no tenant: nobody
        await manager.publish("orders:all", {"id": 4, "tenant_id": 5})
        manager.publish_nowait("orders:all", {"id": 5, "tenant_id": 6})

        assert await guard(alice_first, "alice's first order") == {"orders": {"id": "1", "seen_by": "alice"}}
        assert await guard(anext(alice_orders), "alice's second order") == {"orders": {"id": "4", "seen_by": "alice"}}
        assert await guard(bob_first, "bob's first order") == {"orders": {"id": "2", "seen_by": "bob"}}
        assert await guard(anext(bob_orders), "bob's second order") == {"orders": {"id": "5", "seen_by": "bob"}}
        await alice_orders.aclose()
        await bob_orders.aclose()


async def test_a_changed_plugin_file_is_reloaded_and_a_bad_one_rejected(stack: AsyncExitStack, tmp_path: Path) -> None:
    """Hot reload from Python: the folder watcher swaps in a new version
    while clients stay connected; a file that does not load is rejected and
    the old version keeps deciding."""
    path = tmp_path / "filter.wasm"
    shutil.copy(plugin("tenant-isolation.wasm"), path)
    manager = build_manager(path)
    served = await serve(manager, "fastapi", stack)
    async with Client(transport=transport(served.url, "graphql-transport-ws", user("alice", "5"))) as alice:
        orders = alice.subscribe(GraphQLRequest(ORDERS))
        first = asyncio.ensure_future(anext(orders))
        await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)

        path.write_bytes(b"not a component")
        report = await manager.reload_plugins()
        assert report is not None and report["reloaded"] == []
        assert report["rejected"][0][0] == "filter" and "WebAssembly" in report["rejected"][0][1]
        await manager.publish("orders:all", {"id": 1, "tenant_id": 6})
        await manager.publish("orders:all", {"id": 2, "tenant_id": 5})
        assert await guard(first, "the order") == {"orders": {"id": "2", "seen_by": "alice"}}

        # Once the watcher loads the row filter instead, alice gets her own
        # rows of any tenant.
        shutil.copy(plugin("row-filter.wasm"), path)
        metrics = 'fanwire_plugin_reloads_total{plugin="filter",kind="loaded"} 2'
        await until("the watcher to reload", lambda: metrics in manager.metrics())
        await manager.publish("orders:all", {"id": 3, "tenant_id": 6, "user_id": "alice"})
        assert await guard(anext(orders), "the order after the reload") == {"orders": {"id": "3", "seen_by": "alice"}}
        await orders.aclose()


async def test_plugin_and_policy_errors_are_typed(tmp_path: Path) -> None:
    not_wasm = tmp_path / "bad.wasm"
    not_wasm.write_bytes(b"\x00asm-but-not-really")
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(plugins=[Plugin(not_wasm, "event-filter")]))
    with pytest.raises(ConfigError, match="plugin bad"):
        await manager.open()
    assert not manager.is_open
    with pytest.raises(RuntimeError, match="plugins are not loaded"):
        manager._native.connect("graphql-transport-ws")

    wrong_world = SubscriptionManager(
        SCHEMA, SubscriptionConfig(plugins=[Plugin(plugin("tenant-isolation.wasm"), "subscription-policy")])
    )
    with pytest.raises(ConfigError, match="wrong world"):
        await wrong_world.open()

    both = SubscriptionManager(SCHEMA, SubscriptionConfig(jwt=JwtAuth(algorithm="HS256", secret=SECRET)))
    both.connection_policy(lambda params, headers: Principal("x"))
    with pytest.raises(ConfigError, match="connection policy"):
        await both.open()


THREADS_SCRIPT = """
import asyncio, gc, pathlib, sys, time
from fanwire import Plugin, SubscriptionConfig, SubscriptionManager

def plugin_threads():
    count = 0
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            count += (task / "comm").read_text().startswith("fanwire-plugin")
        except FileNotFoundError:
            pass  # a thread that just ended
    return count

def settle(expected):
    deadline = time.monotonic() + 20  # a hang breaker only
    while plugin_threads() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return plugin_threads()

async def main():
    config = SubscriptionConfig(plugins=[Plugin(sys.argv[1], "event-filter")])
    manager = SubscriptionManager("type Query { a: Int } type Subscription { t: Int }", config)
    counts = [plugin_threads()]
    async with manager:
        # A new thread names itself once it runs: wait for the watcher's name.
        counts.append(settle(2))
    counts.append(settle(1))
    del manager
    gc.collect()
    counts.append(settle(0))
    print(counts)

asyncio.run(main())
"""


def test_closing_stops_the_watcher_and_dropping_the_manager_stops_the_runtime() -> None:
    # In a process of its own, so no other test's manager is counted.
    done = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(plugin("tenant-isolation.wasm"))],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert done.returncode == 0, done.stderr
    # none; epoch ticker and folder watcher; the plugins stay in force
    # after close, so the ticker runs until the manager is gone.
    assert done.stdout.strip() == "[0, 2, 1, 0]"


async def test_a_manager_with_plugins_opens_once() -> None:
    manager = build_manager(plugin("tenant-isolation.wasm"))
    async with manager:
        pass
    with pytest.raises(RuntimeError, match="opens once"):
        await manager.open()
