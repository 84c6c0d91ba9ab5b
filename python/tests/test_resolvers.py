"""Resolver failures, timeouts, grouping and cancellation, through real sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest

from conftest import MODES, RawClient, guard, serve, until
from fanwire import Context, PublishError, SubscriptionConfig, SubscriptionManager

SCHEMA = """
type Query { ok: Boolean }
type Item { id: ID! label: String }
type Subscription {
  item(kind: String!): Item @topic(name: "items")
  strict: Item! @topic(name: "items")
  syncItem: Item @topic(name: "items")
  other: Item @topic(name: "items")
}
"""


class Steered:
    """A manager whose resolvers do what each event's `mode` says."""

    def __init__(self, timeout_ms: int = 150) -> None:
        self.manager = SubscriptionManager(SCHEMA, SubscriptionConfig(resolver_timeout_ms=timeout_ms))
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.calls: list[str] = []

        @self.manager.subscription("item")
        async def item(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
            return await self.behave(event["data"], context)

        @self.manager.subscription("strict")
        async def strict(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
            return await self.behave(event["data"], context)

        @self.manager.subscription("syncItem")
        def sync_item(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
            mode = event["data"]["mode"]
            if mode == "slow":
                time.sleep(0.5)  # a blocking resolver cannot be interrupted; its result is late
            if mode == "raise":
                raise KeyError("missing")
            return {"id": event["data"]["id"], "label": mode}

    async def behave(self, data: dict[str, Any], context: Context) -> Any:
        self.calls.append(context.field)
        mode = data["mode"]
        if mode == "raise":
            raise ValueError("boom")
        if mode == "list":
            return [1, 2]
        if mode == "slow":
            await asyncio.sleep(3600)
        if mode == "block":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return {"id": data["id"], "label": mode}


def error_of(frame: dict[str, Any]) -> tuple[Any, str, str, list[str]]:
    """(data, code, reason, path) of a `next` frame with one error."""
    payload = frame["payload"]
    [error] = payload["errors"]
    return payload["data"], error["extensions"]["code"], error["extensions"]["reason"], error["path"]


@pytest.mark.parametrize("mode", MODES)
async def test_failures_become_field_errors_for_that_subscription_only(mode: str, stack: AsyncExitStack) -> None:
    steered = Steered()
    served = await serve(steered.manager, mode, stack)
    a = await RawClient.open(served.url)
    await a.subscribe("a", "subscription { item(kind: \"x\") { id label } }")
    await a.subscribe("s", "subscription { strict { id } }")
    b = await RawClient.open(served.url)
    await b.subscribe("b", "subscription { other { id } }")
    await b.subscribe("y", "subscription { syncItem { id label } }")
    manager = steered.manager
    await until("four subscriptions", lambda: manager.stats()["subscriptions"] == 4)

    for n, behaviour in enumerate(["ok", "raise", "list", "slow", "ok"], start=1):
        await manager.publish("items", {"id": n, "mode": behaviour})

    got: dict[str, list[dict[str, Any]]] = {"a": [], "s": [], "b": [], "y": []}
    for client, count in ((a, 10), (b, 10)):
        for _ in range(count):
            frame = await client.recv()
            assert frame["type"] == "next", frame
            got[frame["id"]].append(frame)

    item = got["a"]
    assert item[0]["payload"] == {"data": {"item": {"id": "1", "label": "ok"}}}
    assert error_of(item[1])[:3] == ({"item": None}, "RESOLVER_FAILED", "exception")
    assert error_of(item[1])[3] == ["item"]
    assert "ValueError: boom" in item[1]["payload"]["errors"][0]["message"]
    assert error_of(item[2])[:3] == ({"item": None}, "RESOLVER_FAILED", "bad_return")
    assert error_of(item[3])[:3] == ({"item": None}, "RESOLVER_FAILED", "timeout")
    assert item[4]["payload"] == {"data": {"item": {"id": "5", "label": "ok"}}}
    # A non-null field's error nulls `data` itself, with the same path.
    assert error_of(got["s"][1]) == (None, "RESOLVER_FAILED", "exception", ["strict"])
    # No resolver: the event data, untouched by the others' failures.
    assert [f["payload"]["data"]["other"]["id"] for f in got["b"]] == ["1", "2", "3", "4", "5"]
    sync = got["y"]
    assert error_of(sync[1])[:3] == ({"syncItem": None}, "RESOLVER_FAILED", "exception")
    assert error_of(sync[3])[:3] == ({"syncItem": None}, "RESOLVER_FAILED", "timeout")
    assert sync[4]["payload"]["data"] == {"syncItem": {"id": "5", "label": "ok"}}

    stats = manager.stats()
    assert (stats["resolver_errors"], stats["resolver_bad_returns"], stats["resolver_timeouts"]) == (3, 2, 3)
    assert 'fanwire_drops_total{reason="resolver_error"} 8' in manager.metrics()
    await a.close()
    await b.close()
    await until("the disconnects", lambda: manager.stats()["connections"] == 0)


async def test_identical_subscriptions_share_one_resolver_call(stack: AsyncExitStack) -> None:
    steered = Steered()
    served = await serve(steered.manager, "starlette", stack)
    clients = [await RawClient.open(served.url) for _ in range(5)]
    for c in clients:
        await c.subscribe("1", "subscription { item(kind: \"k\") { id } }")
    lone = await RawClient.open(served.url)
    await lone.subscribe("1", "subscription { item(kind: \"k\") { label } }")
    await until("six subscriptions", lambda: steered.manager.stats()["subscriptions"] == 6)
    assert steered.manager.stats()["groups"] == 2
    await steered.manager.publish("items", {"id": 7, "mode": "ok"})
    for c in clients:
        assert (await c.recv())["payload"] == {"data": {"item": {"id": "7"}}}
    assert (await lone.recv())["payload"] == {"data": {"item": {"label": "ok"}}}
    assert steered.calls == ["item", "item"], "once per group, not per client"
    for c in [*clients, lone]:
        await c.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["complete", "disconnect"])
async def test_a_resolver_in_flight_is_cancelled_when_its_last_client_leaves(
    mode: str, how: str, stack: AsyncExitStack
) -> None:
    steered = Steered(timeout_ms=60_000)
    served = await serve(steered.manager, mode, stack)
    client = await RawClient.open(served.url)
    await client.subscribe("c", "subscription { item(kind: \"z\") { id } }")
    await until("the subscription", lambda: steered.manager.stats()["subscriptions"] == 1)
    await steered.manager.publish("items", {"id": 1, "mode": "block"})
    await guard(steered.started.wait(), "the resolver to start")
    if how == "complete":
        await client.send({"id": "c", "type": "complete"})
    else:
        await client.close()
    await guard(steered.cancelled.wait(), "the resolver to be cancelled")
    await until("no subscriptions", lambda: steered.manager.stats()["subscriptions"] == 0)
    assert steered.manager.stats()["resolver_cancellations"] == 1
    if how == "complete":
        # Nothing follows the complete; the connection still works.
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}
        await client.close()
    await until("the disconnect", lambda: steered.manager.stats()["connections"] == 0)


@pytest.mark.parametrize("mode", MODES)
async def test_no_leaks_after_many_connect_disconnect_cycles(mode: str, stack: AsyncExitStack) -> None:
    steered = Steered(timeout_ms=60_000)
    manager = steered.manager
    served = await serve(manager, mode, stack)
    await manager.publish("items", {"id": 0, "mode": "ok"})  # builds the engine
    baseline = asyncio.all_tasks()
    for cycle in range(40):
        client = await RawClient.open(served.url)
        await client.subscribe("1", "subscription { item(kind: \"k\") { id } }")
        await client.subscribe("2", "subscription { other { id } }")
        await until("two subscriptions", lambda: manager.stats()["subscriptions"] == 2)
        # Every other cycle leaves a resolver running when the client goes.
        await manager.publish("items", {"id": cycle, "mode": "block" if cycle % 2 else "ok"})
        assert (await client.recv())["id"] in {"1", "2"}
        await client.close()
        await until("the disconnect", lambda: manager.stats()["connections"] == 0)
    stats = manager.stats()
    assert (stats["subscriptions"], stats["groups"], stats["topics"]) == (0, 0, 0)

    def leftover() -> set[asyncio.Task[Any]]:
        # The polling task itself is the only newcomer allowed.
        return asyncio.all_tasks() - baseline - {asyncio.current_task()}

    await until("resolver and connection tasks to finish", lambda: not leftover())


class Suspending:
    """A manager whose async resolver suspends the way each event's `mode` says."""

    def __init__(self) -> None:
        self.manager = SubscriptionManager(SCHEMA, SubscriptionConfig(resolver_timeout_ms=10_000))
        self.tasks: list[tuple[Any, Any]] = []

        @self.manager.subscription("item")
        async def item(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
            data = event["data"]
            mode = data["mode"]
            loop = asyncio.get_running_loop()
            before = asyncio.current_task()
            if before is not None:
                # Libraries (anyio) inspect the current task in the first step.
                before.get_coro()
                repr(before)
            label: Any = mode
            if mode == "several":
                for _ in range(3):
                    await asyncio.sleep(0)
                await asyncio.sleep(0.001)
            elif mode == "thread":
                # A future completed from another thread.
                done: asyncio.Future[str] = loop.create_future()
                threading.Thread(target=lambda: loop.call_soon_threadsafe(done.set_result, "from-thread")).start()
                label = await done
            elif mode == "executor":
                label = await loop.run_in_executor(None, lambda: "from-executor")
            elif mode == "raise-late":
                await asyncio.sleep(0)
                raise ValueError("late boom")
            elif mode == "list-late":
                await asyncio.sleep(0.001)
                return [1, 2]
            elif mode == "timeout-scope":
                async with asyncio.timeout(30):
                    await asyncio.sleep(0)
                    await asyncio.sleep(0.001)
            elif mode == "timeout-expires":
                # Entered before suspending: it must cancel this resolver, not the publisher.
                try:
                    async with asyncio.timeout(0.01):
                        await asyncio.sleep(3600)
                except TimeoutError:
                    label = "timed-out-inside"
            self.tasks.append((before, asyncio.current_task()))
            return {"id": data["id"], "label": label}


@pytest.mark.parametrize("where", ["loop", "thread"])
async def test_resolvers_that_suspend_deliver_in_order_with_errors_in_place(where: str, stack: AsyncExitStack) -> None:
    suspending = Suspending()
    manager = suspending.manager
    served = await serve(manager, "starlette", stack)
    client = await RawClient.open(served.url)
    await client.subscribe("s", "subscription { item(kind: \"x\") { id label } }")
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    modes = ["several", "thread", "raise-late", "executor", "list-late", "timeout-scope", "ok"]
    manager.bind_event_loop()
    for n, mode in enumerate(modes, start=1):
        event = {"id": n, "mode": mode}
        if where == "loop":
            await manager.publish("items", event)
        else:
            # Dispatched on another thread: the resolver is handed to the loop.
            await asyncio.to_thread(manager.publish_nowait, "items", event)
    frames = [await client.recv() for _ in modes]
    assert [f["id"] for f in frames] == ["s"] * len(modes)
    payloads = [f["payload"] for f in frames]
    assert payloads[0] == {"data": {"item": {"id": "1", "label": "several"}}}
    assert payloads[1] == {"data": {"item": {"id": "2", "label": "from-thread"}}}
    assert error_of(frames[2]) == ({"item": None}, "RESOLVER_FAILED", "exception", ["item"])
    assert "ValueError: late boom" in payloads[2]["errors"][0]["message"]
    assert payloads[3] == {"data": {"item": {"id": "4", "label": "from-executor"}}}
    assert error_of(frames[4]) == ({"item": None}, "RESOLVER_FAILED", "bad_return", ["item"])
    assert payloads[5] == {"data": {"item": {"id": "6", "label": "timeout-scope"}}}
    assert payloads[6] == {"data": {"item": {"id": "7", "label": "ok"}}}
    stats = manager.stats()
    assert (stats["resolver_errors"], stats["resolver_bad_returns"], stats["resolver_timeouts"]) == (1, 1, 0)
    await client.close()
    await until("the disconnect", lambda: manager.stats()["connections"] == 0)


async def test_an_async_resolver_runs_in_a_task_of_its_own_from_its_first_step(stack: AsyncExitStack) -> None:
    """`asyncio.timeout`, TaskGroups and anyio scopes bind to the current
    task when entered: a resolver must not see its publisher's task there,
    and must see the same task before and after it suspends."""
    suspending = Suspending()
    manager = suspending.manager
    served = await serve(manager, "starlette", stack)
    client = await RawClient.open(served.url)
    await client.subscribe("s", "subscription { item(kind: \"x\") { id } }")
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    for n, mode in enumerate(["ok", "several", "thread", "timeout-expires"], start=1):
        await manager.publish("items", {"id": n, "mode": mode})
        assert (await client.recv())["payload"] == {"data": {"item": {"id": str(n)}}}
    publisher = asyncio.current_task()
    for before, after in suspending.tasks:
        assert before is not None and before is not publisher
        assert before is after
    await client.close()


async def test_a_custom_task_factory_makes_the_resolver_tasks(stack: AsyncExitStack) -> None:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    stack.callback(loop.set_task_factory, None)
    suspending = Suspending()
    manager = suspending.manager
    served = await serve(manager, "starlette", stack)
    client = await RawClient.open(served.url)
    await client.subscribe("s", "subscription { item(kind: \"x\") { id label } }")
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    for n, mode in enumerate(["ok", "several", "raise-late"], start=1):
        await manager.publish("items", {"id": n, "mode": mode})
    frames = [await client.recv() for _ in range(3)]
    assert frames[0]["payload"] == {"data": {"item": {"id": "1", "label": "ok"}}}
    assert frames[1]["payload"] == {"data": {"item": {"id": "2", "label": "several"}}}
    assert error_of(frames[2]) == ({"item": None}, "RESOLVER_FAILED", "exception", ["item"])
    assert len(suspending.tasks) == 2
    for before, after in suspending.tasks:
        assert before is after and any(before is task for task in made)
    await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_async_resolutions_dispatched_on_another_thread_all_arrive(mode: str, stack: AsyncExitStack) -> None:
    """A publisher thread keeps the dispatcher handing resolutions to the
    loop while the loop runs the ones before: none may be left unwoken
    (a wake-up lost in the loop's executor once stalled every later one,
    and the backlog with them)."""
    manager = SubscriptionManager(SCHEMA)

    @manager.subscription("item")
    async def item(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
        return {"id": event["data"]["id"], "label": "x"}

    served = await serve(manager, mode, stack)
    client = await RawClient.open(served.url)
    await client.subscribe("s", "subscription { item(kind: \"x\") { id } }")
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    manager.bind_event_loop()
    events = 3000

    def publish_all() -> None:
        sent = 0
        while sent < events:
            try:
                manager.publish_nowait("items", {"id": sent})
                sent += 1
            except PublishError:
                time.sleep(0.001)  # the backlog is full: the loop is behind, let it catch up

    publisher = asyncio.ensure_future(asyncio.to_thread(publish_all))
    ids = [(await client.recv())["payload"]["data"]["item"]["id"] for _ in range(events)]
    await guard(publisher, "the publisher thread")
    assert ids == [str(n) for n in range(events)]
    await client.close()
    await until("the disconnect", lambda: manager.stats()["connections"] == 0)


async def test_running_resolutions_are_bounded_apart_from_waiting_events(stack: AsyncExitStack) -> None:
    """`max_resolutions` async resolutions may await at once: one more
    publish is refused by `publish_nowait` (and waited for by `publish`)
    until one finishes, while `max_backlog` bounds only the events waiting
    to be fanned out."""
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(max_backlog=1, max_resolutions=2))
    gates: list[asyncio.Event] = []

    @manager.subscription("item")
    async def item(event: dict[str, Any], variables: dict[str, Any], context: Context) -> Any:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return {"id": event["data"]["id"], "label": "x"}

    served = await serve(manager, "rust", stack)
    client = await RawClient.open(served.url)
    await client.subscribe("s", "subscription { item(kind: \"x\") { id } }")
    await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
    for n in range(2):
        await manager.publish("items", {"id": n})
    await until("two resolutions awaiting", lambda: len(gates) == 2)
    with pytest.raises(PublishError, match="saturated"):
        manager.publish_nowait("items", {"id": 2})
    waiting = asyncio.ensure_future(manager.publish("items", {"id": 2}))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "publish waits for a resolution to finish"
    gates[0].set()
    await guard(waiting, "the waiting publish")
    await until("the third resolution", lambda: len(gates) == 3)
    for gate in gates[1:]:
        gate.set()
    ids = [(await client.recv())["payload"]["data"]["item"]["id"] for _ in range(3)]
    assert ids == ["0", "1", "2"]
    await client.close()
