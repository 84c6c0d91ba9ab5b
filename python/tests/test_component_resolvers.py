"""Component resolvers (WebAssembly ``field-resolver`` components) bound
from Python with :class:`ComponentResolver`, beside Python resolvers on
the same manager: served in every mode over real sockets, reloaded with
the plugins, and refused clearly when a field would have two resolvers or
does not exist. The component is ``plugins/testing/resolver``, whose mode
the field's ``mode`` argument chooses."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest

from conftest import MODES, RawClient, guard, serve, transport, until
from fanwire import ComponentResolver, ConfigError, Context, Plugin, PluginRuntime, SubscriptionConfig, SubscriptionManager
from services import plugin

SCHEMA = """
type Query { ok: Boolean }
type Tick { seq: Int! payload: String by: String }
type Subscription {
  tick(topic: String!, mode: String, code: String): Tick @topic(name: "ticks:{topic}")
  doubled(topic: String!): Tick @topic(name: "ticks:{topic}")
}
"""
TICK = 'subscription { tick(topic: "a") { seq by } }'
UPPER = 'subscription { tick(topic: "a", mode: "upper") { seq payload } }'
REFUSED = 'subscription { tick(topic: "a", mode: "error", code: "NOT_TODAY") { seq } }'
DOUBLED = 'subscription { doubled(topic: "a") { seq by } }'


def manager_with(resolver: ComponentResolver, **runtime: Any) -> SubscriptionManager:
    """A manager whose `tick` is the component's and `doubled` a Python resolver's."""
    manager = SubscriptionManager(
        SCHEMA, SubscriptionConfig(resolvers=[resolver], plugin_runtime=PluginRuntime(**runtime))
    )

    @manager.subscription("doubled")
    def doubled(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
        return {"seq": event["data"]["seq"] * 2, "by": "python"}

    return manager


@pytest.mark.parametrize("mode", MODES)
async def test_a_component_resolver_serves_its_field_beside_a_python_resolver(
    mode: str, stack: AsyncExitStack
) -> None:
    manager = manager_with(ComponentResolver("tick", plugin("resolver.wasm"), config={"field": "payload"}))
    served = await serve(manager, mode, stack)
    async with Client(transport=transport(served.url, "graphql-transport-ws", {})) as client:
        ticks = client.subscribe(GraphQLRequest(TICK))
        upper = client.subscribe(GraphQLRequest(UPPER))
        doubled = client.subscribe(GraphQLRequest(DOUBLED))
        firsts = [asyncio.ensure_future(anext(s)) for s in (ticks, upper, doubled)]
        await until("three subscriptions", lambda: manager.stats()["subscriptions"] == 3)
        await manager.publish("ticks:a", {"seq": 1, "payload": "hello"})
        await manager.publish("ticks:a", {"seq": 2, "payload": "again"})
        assert await guard(firsts[0], "the component's first value") == {"tick": {"seq": 1, "by": "00000000"}}
        assert await guard(anext(ticks), "the component's second value") == {"tick": {"seq": 2, "by": "00000000"}}
        assert await guard(firsts[1], "the upper-cased value") == {"tick": {"seq": 1, "payload": "HELLO"}}
        assert await guard(firsts[2], "the Python resolver's value") == {"doubled": {"seq": 2, "by": "python"}}
        for s in (ticks, upper, doubled):
            await s.aclose()
    metrics = manager.metrics()
    assert 'fanwire_plugin_decisions_total{plugin="resolver",kind="value"} 4' in metrics, metrics


async def test_errors_reach_only_their_own_subscription(stack: AsyncExitStack) -> None:
    manager = manager_with(ComponentResolver("tick", plugin("resolver.wasm")))
    served = await serve(manager, "rust", stack)
    client = await RawClient.open(served.url)
    stack.push_async_callback(client.close)
    await client.subscribe("refused", REFUSED)
    await client.subscribe("broken", 'subscription { tick(topic: "a", mode: "not-json") { seq } }')
    await client.subscribe("ok", TICK)
    await until("three subscriptions", lambda: manager.stats()["subscriptions"] == 3)
    await manager.publish("ticks:a", {"seq": 1})
    frames: dict[str, Any] = {}
    for _ in range(3):
        frame = await client.recv()
        assert frame["type"] == "next", frame
        frames[frame["id"]] = frame["payload"]
    assert frames["ok"]["data"] == {"tick": {"seq": 1, "by": "00000000"}}
    assert "errors" not in frames["ok"]
    assert frames["refused"]["data"] == {"tick": None}
    assert frames["refused"]["errors"] == [
        {"message": "refused by the resolver", "path": ["tick"], "extensions": {"code": "NOT_TODAY"}}
    ]
    [broken] = frames["broken"]["errors"]
    assert frames["broken"]["data"] == {"tick": None}
    assert broken["extensions"] == {"code": "RESOLVER_FAILED", "reason": "not_json"}, broken
    assert "returned text that is not JSON" in broken["message"]


async def test_a_replaced_component_is_reloaded_with_the_plugins(stack: AsyncExitStack, tmp_path: Path) -> None:
    path = tmp_path / "ticker.wasm"
    shutil.copy(plugin("resolver.wasm"), path)
    manager = manager_with(ComponentResolver("tick", path), watch=False)
    served = await serve(manager, "fastapi", stack)
    async with Client(transport=transport(served.url, "graphql-transport-ws", {})) as client:
        ticks = client.subscribe(GraphQLRequest(TICK))
        first = asyncio.ensure_future(anext(ticks))
        await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
        await manager.publish("ticks:a", {"seq": 1})
        assert await guard(first, "the first value") == {"tick": {"seq": 1, "by": "00000000"}}

        # Not a resolver: rejected, the old version keeps resolving.
        shutil.copy(plugin("row-filter.wasm"), path)
        report = await manager.reload_plugins()
        assert report is not None and report["reloaded"] == []
        assert report["rejected"][0][0] == "ticker" and "wrong world" in report["rejected"][0][1]
        await manager.publish("ticks:a", {"seq": 2})
        assert await guard(anext(ticks), "the old version's value") == {"tick": {"seq": 2, "by": "00000000"}}

        path.write_bytes(resolver_version(7))
        report = await manager.reload_plugins()
        assert report is not None and report["reloaded"] == ["ticker"]
        await manager.publish("ticks:a", {"seq": 3})
        assert await guard(anext(ticks), "the new version's value") == {"tick": {"seq": 3, "by": "00000007"}}
        await ticks.aclose()


def resolver_version(version: int) -> bytes:
    """The resolver component with its version marker set to `version`."""
    base = plugin("resolver.wasm").read_bytes()
    marker = b"fanwire-resolver:00000000"
    at = base.index(marker) + len(marker) - 8
    return base[:at] + f"{version:08}".encode() + base[at + 8 :]


async def test_a_field_takes_one_resolver_of_the_schema_and_bindings_are_typed(tmp_path: Path) -> None:
    component = ComponentResolver("tick", plugin("resolver.wasm"), name="ticker", timeout_ms=50, config={"k": 1})
    assert (component.field, component.name, component.timeout_ms, component.memory_mb) == ("tick", "ticker", 50, None)
    assert component.config == {"k": 1} and component.path.endswith("resolver.wasm")
    assert SubscriptionConfig(resolvers=[component]).resolvers[0].name == "ticker"

    # A Python resolver for the component's field is refused ...
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(resolvers=[component]))
    with pytest.raises(ConfigError, match="`tick` has a component resolver"):
        manager.subscription("tick")(lambda event, variables, context: event["data"])
    # ... as is a component for a field the schema lacks ...
    with pytest.raises(ConfigError, match="no field `tock`"):
        SubscriptionManager(SCHEMA, SubscriptionConfig(resolvers=[ComponentResolver("tock", plugin("resolver.wasm"))]))
    # ... two for one field, a missing file, and a resolver declared as a plugin.
    with pytest.raises(ConfigError, match="two resolvers for the field `tick`"):
        SubscriptionConfig(resolvers=[component, ComponentResolver("tick", plugin("resolver.wasm"), name="b")])
    with pytest.raises(ConfigError, match="no such file"):
        SubscriptionConfig(resolvers=[ComponentResolver("tick", tmp_path / "missing.wasm")])
    with pytest.raises(ConfigError, match="ComponentResolver"):
        Plugin(plugin("resolver.wasm"), "field-resolver")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown field `kind`"):
        ComponentResolver("tick", plugin("resolver.wasm"), kind="event-filter")  # type: ignore[call-arg]

    # A component that is not a resolver is refused when the manager opens.
    wrong = SubscriptionManager(
        SCHEMA, SubscriptionConfig(resolvers=[ComponentResolver("tick", plugin("row-filter.wasm"))])
    )
    with pytest.raises(ConfigError, match="wrong world: the config says field-resolver"):
        await wrong.open()

    # The TOML table reads the same.
    toml = tmp_path / "fanwire.toml"
    toml.write_text(
        f'[[resolvers]]\nfield = "tick"\npath = "{plugin("resolver.wasm")}"\n\n[resolvers.config]\nmode = "upper"\n'
    )
    from_file = SubscriptionConfig.from_toml(toml).resolvers
    assert [(r.field, r.config) for r in from_file] == [("tick", {"mode": "upper"})]
