"""Resolver components in the fanwire binary, with gql's WebsocketsTransport
in its default configuration.

- `examples/resolver-component/` as it ships: `fanwire serve --config` its
  fanwire.toml, whose `[[resolvers]]` binds `tick` to the Python resolver
  (componentize-py, `plugins/python-sdk`) that upper-cases `payload`.
- The Rust resolver `plugins/format-fields` (the SDK's `resolver!`) bound
  by a config written here: a field built from a template of the data and
  the field's argument; and a config it cannot read, which gives the
  subscriber the documented error at the field.

The components come from `bash plugins/build.sh` (tests/run.sh runs it
first); a missing one fails the test. The host compiles a component once
and keeps it in its compile cache: a server's first start on a clean
machine compiles the ~19 MB Python component, hence its longer deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from harness import Server, fanwire_bin, guard

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
