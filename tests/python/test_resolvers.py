"""Resolver components in the fanwire binary, with gql's WebsocketsTransport
in its default configuration.

- `examples/resolver-component/` as it ships: `fanwire serve --config` its
  fanwire.toml, whose `[[resolvers]]` binds `tick` to the Python resolver
  (componentize-py, `plugins/python-sdk`) that upper-cases `payload`.
- The Rust resolver `plugins/format-fields` (the SDK's `resolver!`) bound
  by a config written here: a field built from a template of the data and
  the field's argument; and a config it cannot read, which gives the
  subscriber the documented error at the field.
- `plugins/testing/resolver` made to trap, spin past its deadline, exceed
  its memory, answer text that is not JSON or refuse, one subscription
  each beside one that works: each error reaches its own subscriber only,
  and /metrics counts it.
- format-fields and the Python example on the same field, swapped under a
  continuous publish by the folder watch (Rust, Python, Rust): every event
  once, in order, each resolver's values in turn, the client connected.

The components come from `bash plugins/build.sh` (tests/run.sh runs it
first); a missing one fails the test. The host compiles a component once
and keeps it in its compile cache: a server's first start on a clean
machine compiles the ~19 MB Python component, hence its longer deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from harness import GUARD_SECONDS, Server, fanwire_bin, guard

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "resolver-component"
DIST = ROOT / "plugins" / "dist"
# Generous: a cold compile of the Python component on a loaded CI machine.
COMPILE_SECONDS = 300.0

TICK = """
subscription Ticks($topic: String!) {
  tick(topic: $topic) { seq topic sentAt payload }
}
"""


def component(name: str) -> Path:
    """A built component; fails the test when it is missing."""
    path = DIST / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(f"{path} is missing: build the plugins with `bash plugins/build.sh`", pytrace=False)
    return path


@pytest.fixture
def example() -> Iterator[Server]:
    """`fanwire serve --config examples/resolver-component/fanwire.toml`."""
    component("resolver-component")
    srv = Server(fanwire_bin(), EXAMPLE / "fanwire.toml", schema=None, start_seconds=COMPILE_SECONDS)
    try:
        yield srv
    finally:
        srv.stop()


# Beyond pytest.ini's hang breaker: the fixture may compile the component.
@pytest.mark.timeout(COMPILE_SECONDS + 60)
async def test_the_example_upper_cases_payload(example: Server) -> None:
    async with Client(transport=WebsocketsTransport(url=example.ws_url)) as session:
        results = session.subscribe(GraphQLRequest(TICK, variable_values={"topic": "demo"}))
        first = asyncio.ensure_future(anext(results))  # sends the subscribe
        await example.wait_metric("fanwire_subscriptions", 1)

        published = await example.publish(
            [
                {"topic": "ticks:other", "data": {"seq": 0, "topic": "other", "sentAt": 1.0, "payload": "no"}},
                {"topic": "ticks:demo", "data": {"seq": 1, "topic": "demo", "sentAt": 1765100000.25, "payload": "hello, fanwire"}},
                {"topic": "ticks:demo", "data": {"seq": 2, "topic": "demo", "sentAt": 1765100001.5, "payload": None, "extra": "x"}},
            ]
        )
        assert published == {"accepted": 3, "deliveries": 2}
        assert await guard(first, "the first tick") == {
            "tick": {"seq": 1, "topic": "demo", "sentAt": 1765100000.25, "payload": "HELLO, FANWIRE"}
        }
        assert await guard(anext(results), "the second tick") == {
            "tick": {"seq": 2, "topic": "demo", "sentAt": 1765100001.5, "payload": None}
        }
        await results.aclose()
        await example.wait_metric("fanwire_subscriptions", 0)


FORMAT_SCHEMA = """
type Subscription {
  tick(topic: String!): Tick @topic(name: "ticks:{topic}")
}
type Tick { seq: Int! payload: String label: String }
"""


def format_fields_server(tmp_path: Path, config: str) -> Server:
    """A server whose `tick` is resolved by format-fields with this TOML `config` table."""
    component("format-fields")
    (tmp_path / "schema.graphql").write_text(FORMAT_SCHEMA)
    toml = tmp_path / "fanwire.toml"
    toml.write_text(
        f'[server]\nschema = "schema.graphql"\n\n[plugin_runtime]\nfolder = "{DIST}"\n\n'
        f'[[resolvers]]\nfield = "tick"\npath = "format-fields.wasm"\nconfig = {config}\n'
    )
    return Server(fanwire_bin(), toml, schema=None)


async def first_result(server: Server, topic: str, data: Any) -> Any:
    """Subscribes to `tick(topic:)` with gql, publishes `data` and returns the first result."""
    query = GraphQLRequest(
        "subscription ($t: String!) { tick(topic: $t) { seq payload label } }", variable_values={"t": topic}
    )
    async with Client(transport=WebsocketsTransport(url=server.ws_url)) as session:
        results = session.subscribe(query)
        first = asyncio.ensure_future(anext(results))
        await server.wait_metric("fanwire_subscriptions", 1)
        assert await server.publish({"topic": f"ticks:{topic}", "data": data}) == {"accepted": 1, "deliveries": 1}
        try:
            return await guard(first, "the first result")
        finally:
            await results.aclose()


async def test_a_rust_resolver_formats_fields(tmp_path: Path) -> None:
    server = format_fields_server(
        tmp_path, '{ set = { label = "#{seq} on {$topic}: {payload}" }, case = { payload = "lower" } }'
    )
    try:
        result = await first_result(server, "rust", {"seq": 7, "payload": "Hello"})
        assert result == {"tick": {"seq": 7, "payload": "hello", "label": "#7 on rust: Hello"}}
    finally:
        server.stop()


async def test_a_resolver_error_reaches_the_subscriber_at_the_field(tmp_path: Path) -> None:
    server = format_fields_server(tmp_path, '{ set = { label = "{oops" } }')
    try:
        with pytest.raises(TransportQueryError) as raised:
            await first_result(server, "bad", {"seq": 1})
        assert raised.value.data == {"tick": None}
        assert raised.value.errors == [
            {
                "message": 'format-fields: bad config: template "{oops" has an unclosed `{`',
                "path": ["tick"],
                "extensions": {"code": "RESOLVER_FAILED"},
            }
        ]
    finally:
        server.stop()


FAULT_SCHEMA = """
type Subscription {
  tick(topic: String!, mode: String, code: String): Tick @topic(name: "ticks:{topic}")
}
type Tick { seq: Int! payload: String by: String }
"""

# Each failing group's subscription arguments and the error its subscriber
# sees: (code, reason, a part of the message); docs/architecture.md's
# failure table.
FAULTS = {
    "trap": ('mode: "trap"', "RESOLVER_FAILED", "trap", "failed (trap)"),
    "spin": ('mode: "spin"', "RESOLVER_FAILED", "timeout", "ran past its deadline of 2000 ms"),
    "hog": ('mode: "hog"', "RESOLVER_FAILED", "memory", "reached its cap of 16 MiB"),
    "not-json": ('mode: "not-json"', "RESOLVER_FAILED", "not_json", "returned text that is not JSON"),
    "error": ('mode: "error", code: "TEAPOT"', "TEAPOT", None, "refused by the resolver"),
}


async def test_each_failing_resolver_call_reaches_only_its_own_subscriber(tmp_path: Path) -> None:
    """`plugins/testing/resolver` on `tick`, made to trap, loop past its
    deadline, exceed its memory, answer text that is not JSON or refuse,
    one subscription each beside one that works, all on one gql connection:
    each failing subscriber gets its own error at the field for every event,
    the working one every value in order, and /metrics counts each fault."""
    component("resolver")
    (tmp_path / "schema.graphql").write_text(FAULT_SCHEMA)
    toml = tmp_path / "fanwire.toml"
    toml.write_text(
        f'[server]\nschema = "schema.graphql"\n\n[plugin_runtime]\nfolder = "{DIST}"\n\n'
        # The memory cap is met long before the deadline.
        '[[resolvers]]\nfield = "tick"\npath = "resolver.wasm"\ntimeout_ms = 2000\nmemory_mb = 16\n'
    )
    server = Server(fanwire_bin(), toml, schema=None)
    try:
        async with Client(transport=WebsocketsTransport(url=server.ws_url)) as session:

            def subscribe(args: str) -> Any:
                return session.subscribe(GraphQLRequest(f'subscription {{ tick(topic: "f"{args}) {{ seq by }} }}'))

            working = subscribe("")
            first = asyncio.ensure_future(anext(working))  # sends the subscribe
            await server.wait_metric("fanwire_subscriptions", 1)
            # gql ends a subscription at its first error: each failing
            # subscriber subscribes anew for the second event, so every
            # group fails twice while the working one goes on.
            for seq in range(2):
                failing = {what: subscribe(", " + args) for what, (args, *_) in FAULTS.items()}
                reads = {what: asyncio.ensure_future(anext(results)) for what, results in failing.items()}
                await server.wait_metric("fanwire_subscriptions", 1 + len(FAULTS))
                published = await server.publish({"topic": "ticks:f", "data": {"seq": seq, "payload": "p"}})
                assert published == {"accepted": 1, "deliveries": 1 + len(FAULTS)}
                value = await guard(first if seq == 0 else anext(working), f"the working value {seq}")
                assert value == {"tick": {"seq": seq, "by": "00000000"}}
                for what, read in reads.items():
                    _, code, reason, message = FAULTS[what]
                    with pytest.raises(TransportQueryError) as raised:
                        await guard(read, f"{what}'s error for event {seq}")
                    assert raised.value.data == {"tick": None}, what
                    [error] = raised.value.errors or []
                    assert error["path"] == ["tick"], (what, error)
                    extensions = {"code": code} if reason is None else {"code": code, "reason": reason}
                    assert error["extensions"] == extensions, (what, error)
                    assert message in error["message"], (what, error)
                # gql completes a subscription that ended in an error.
                await server.wait_metric("fanwire_subscriptions", 1)
            await working.aclose()
        metric = 'fanwire_plugin_{}_total{{plugin="resolver",kind="{}"}}'
        for fault in ("trap", "timeout", "memory"):
            assert await server.metric(metric.format("faults", fault)) == 2, fault
        assert await server.metric(metric.format("decisions", "value")) == 2
        assert await server.metric(metric.format("decisions", "not_json")) == 2
        assert await server.metric(metric.format("decisions", "error")) == 2
        await server.wait_metric("fanwire_connections", 0)
    finally:
        server.stop()


RELOAD_QUERY = "subscription ($t: String!) { tick(topic: $t) { seq payload } }"


def resolved_by(seq: int, payload: Any) -> str:
    """Which resolver made a tick's payload from `Tick <seq>`: format-fields
    lower-cases it, the Python example upper-cases it."""
    if payload == f"tick {seq}":
        return "rust"
    if payload == f"TICK {seq}":
        return "python"
    return f"neither ({payload!r})"


def swap(target: Path, source: Path) -> None:
    """Replaces `target` with `source`'s bytes as deploy tools do: a
    temporary file renamed over it (the watcher never sees half a file)."""
    staged = target.with_suffix(".staged")
    shutil.copyfile(source, staged)
    os.replace(staged, target)


def reload_config(folder: Path, cache: Path, name: str, path: str) -> Path:
    """`folder/name`: a TOML serving the example's schema whose `tick` is
    resolved by the component `path` in `folder` (with format-fields'
    config, which the Python example ignores), `cache` its compile cache."""
    toml = folder / name
    toml.write_text(
        f'[server]\nschema = "{EXAMPLE / "schema.graphql"}"\n\n'
        f'[plugin_runtime]\nfolder = "{folder}"\nwatch_interval_ms = 50\ncache_dir = "{cache}"\n\n'
        f'[[resolvers]]\nfield = "tick"\nname = "ticker"\npath = "{path}"\n'
        # About the swap, not deadlines: a loaded machine may preempt a call
        # for longer than the default.
        "timeout_ms = 10000\n"
        'config = { case = { payload = "lower" } }\n'
    )
    return toml


@pytest.mark.timeout(COMPILE_SECONDS + 300)
async def test_a_rust_and_a_python_resolver_swapped_under_load_serve_every_event_once_in_order(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The component behind `tick` goes from format-fields (Rust) to the
    Python example and back, by the folder watch, while one POST /publish
    follows another: the client receives every event once, in order, the old
    resolver's values then the new one's, and stays connected."""
    rust, python = component("format-fields"), component("resolver-component")
    # The test's own compile cache, kept between runs in pytest's cache
    # (a fresh one under `-p no:cacheprovider`). The Python component
    # compiles for tens of seconds: a server started on it first fills the
    # cache, so the swap under load reads it from there.
    kept = getattr(request.config, "cache", None)
    cache = Path(kept.mkdir("fanwire-plugin-cache")) if kept is not None else tmp_path / "plugin-cache"
    shutil.copyfile(python, tmp_path / "python.wasm")
    warm = reload_config(tmp_path, cache, "warm.toml", "python.wasm")
    Server(fanwire_bin(), warm, schema=None, start_seconds=COMPILE_SECONDS).stop()

    target = tmp_path / "tick.wasm"
    shutil.copyfile(rust, target)
    server = Server(fanwire_bin(), reload_config(tmp_path, cache, "fanwire.toml", "tick.wasm"), schema=None)
    try:
        async with Client(transport=WebsocketsTransport(url=server.ws_url)) as session:
            results = session.subscribe(GraphQLRequest(RELOAD_QUERY, variable_values={"t": "reload"}))
            received: list[tuple[int, str]] = []
            last: list[int] = []  # the final event's seq, once published

            async def read() -> None:
                async for result in results:
                    seq = result["tick"]["seq"]
                    received.append((seq, resolved_by(seq, result["tick"]["payload"])))
                    if last and seq >= last[0]:
                        return

            reader = asyncio.ensure_future(read())  # sends the subscribe
            await server.wait_metric("fanwire_subscriptions", 1)
            published = 0
            stop = asyncio.Event()

            async def publish_one_at_a_time() -> None:
                nonlocal published
                while not stop.is_set():
                    data = {"seq": published, "topic": "reload", "sentAt": float(published), "payload": f"Tick {published}"}
                    answer = await server.publish({"topic": "ticks:reload", "data": data})
                    assert answer == {"accepted": 1, "deliveries": 1}, f"event {published}: {answer}"
                    published += 1

            publisher = asyncio.ensure_future(publish_one_at_a_time())

            async def until(what: str, condition: Callable[[], bool], seconds: float = GUARD_SECONDS) -> None:
                """Waits for `condition`; fails at the deadline, or as soon as
                the reader or a running publisher ends."""
                deadline = asyncio.get_running_loop().time() + seconds
                while not condition():
                    for task, name in ((reader, "the subscription"), (publisher, "the publisher")):
                        if task.done() and not (task is publisher and stop.is_set()):
                            task.result()  # its failure, if it failed
                            pytest.fail(f"{name} ended while waiting for {what}")
                    if asyncio.get_running_loop().time() > deadline:
                        pytest.fail(f"gave up waiting for {what} ({published} events published, {len(received)} received)")
                    await asyncio.sleep(0.01)

            def latest_by(resolver: str) -> Callable[[], bool]:
                return lambda: bool(received) and received[-1][1] == resolver

            await until("ten events", lambda: len(received) >= 10)
            swap(target, python)
            # Read from the cache, the Python component loads in about a
            # second; the deadline only guards a stuck reload.
            await until("the Python resolver's first value", latest_by("python"), COMPILE_SECONDS)
            swap(target, rust)
            await until("format-fields' first value after the Python resolver's", latest_by("rust"))
            stop.set()
            await guard(publisher, "the publisher to stop")
            await until(f"event {published - 1}, the last published", lambda: received[-1][0] == published - 1)

            # Every event once, in order ...
            assert [seq for seq, _ in received] == list(range(published))
            # ... the old resolver's values, then the new one's, at each swap.
            phases = [by for i, (_, by) in enumerate(received) if i == 0 or received[i - 1][1] != by]
            assert phases == ["rust", "python", "rust"]
            # ... and the client is still connected, its subscription live.
            last.append(published)
            await server.publish({"topic": "ticks:reload", "data": {"seq": published, "payload": f"Tick {published}"}})
            await guard(reader, "one more event")
            assert received[-1] == (published, "rust")
            assert await server.metric("fanwire_connections") == 1
            # One load at the start and one per swap, both swaps from the
            # compile cache (the warm-up stored the Python entry, the start
            # the Rust one; the start itself may have compiled).
            assert await server.metric('fanwire_plugin_reloads_total{plugin="ticker",kind="loaded"}') == 3
            hits = await server.metric('fanwire_plugin_cache_total{plugin="ticker",result="hit"}')
            assert hits is not None and hits >= 2
            await results.aclose()
            await server.wait_metric("fanwire_subscriptions", 0)
    finally:
        server.stop()
