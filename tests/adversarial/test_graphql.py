"""GraphQL abuse: documents built to get past the limits the docs name.

examples/standalone/fanwire.toml: max_document_bytes, max_depth, max_aliases,
max_fields ("fragments expanded"); docs/architecture.md: a parse, validation,
variable or limit error is an `error` for that id, the connection stays and
the id is free again.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness import BASE_LIMITS, TICK, Client, Server


async def refused(server: Server, query: str, variables: object = None) -> list[dict[str, Any]]:
    """Subscribes with `query` and expects an `error` frame; then proves the id is free
    again and nothing was subscribed (the next event reaches only the good subscription)."""
    client = await Client.open(server)
    await client.init()
    await client.subscribe("bad", query, variables if variables is not None else {"s": "gq"})
    errors = await client.error_for("bad")
    for error in errors:
        assert isinstance(error, dict) and isinstance(error.get("message"), str), error
    # The connection stays, and the id is free for a good subscription.
    await client.subscribe("bad", TICK, {"s": "gq"})
    await client.ping_pong()
    await server.publish({"topic": "ticks:gq", "data": {"n": 1, "payload": "p"}})
    assert (await client.next_data("bad"))["tick"]["n"] == 1
    await client.close()
    return errors


def codes(errors: list[dict[str, Any]]) -> set[object]:
    """The `extensions.code` of each error."""
    return {e.get("extensions", {}).get("code") for e in errors}


def nested(depth: int) -> str:
    """A selection `node { child { child ... { value } } }` `depth` fields deep below `tick`."""
    return "node { " + "child { " * (depth - 1) + "value" + " }" * depth


async def test_depth_over_the_limit_is_refused(server: Server) -> None:
    depth = BASE_LIMITS["max_depth"]
    query = "subscription($s: String!) { tick(stream: $s) { " + nested(depth) + " } }"
    assert "LIMIT_EXCEEDED" in codes(await refused(server, query))


async def test_thousands_of_levels_are_refused_without_overflowing_a_stack(server: Server) -> None:
    depth = 1500  # 9 KB, under max_document_bytes: only the depth and parser limits stand in the way.
    query = "subscription($s: String!) { tick(stream: $s) { " + nested(depth) + " } }"
    await refused(server, query)


async def test_deep_nesting_of_inline_fragments_is_refused(server: Server) -> None:
    query = (
        "subscription($s: String!) { tick(stream: $s) { "
        + "... on Tick { " * 700
        + "n"
        + " }" * 700
        + " } }"
    )
    await refused(server, query)


async def test_deeply_nested_list_argument_is_refused(server: Server) -> None:
    query = "subscription { tick(stream: " + "[" * 3000 + '"a"' + "]" * 3000 + ") { n } }"
    await refused(server, query)


async def test_aliases_over_the_limit_are_refused(server: Server) -> None:
    aliases = " ".join(f"a{i}: n" for i in range(BASE_LIMITS["max_aliases"] + 1))
    query = "subscription($s: String!) { tick(stream: $s) { " + aliases + " } }"
    assert "LIMIT_EXCEEDED" in codes(await refused(server, query))


async def test_conflicting_aliases_are_refused(server: Server) -> None:
    """Hundreds of same-named aliases on different fields (a validation error per pair)."""
    pairs = " ".join("a: n a: payload" for _ in range(600))
    query = "subscription($s: String!) { tick(stream: $s) { " + pairs + " } }"
    await refused(server, query)


def doubling(levels: int, leaf: str) -> str:
    """`fragment F0 on Tick { ...F1 ...F1 }` ... `fragment F<levels> on Tick { <leaf> }`:
    each level doubles the expanded size, so the leaf appears 2**levels times."""
    fragments = [f"fragment F{i} on Tick {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on Tick {{ {leaf} }}")
    return "subscription($s: String!) { tick(stream: $s) { ...F0 } } " + " ".join(fragments)


@pytest.mark.parametrize("levels", [9, 20, 32, 63, 64, 65, 80])
async def test_fragment_doubling_is_refused(server: Server, levels: int) -> None:
    """2**levels copies of one field; at 64 levels a wrapping counter reads 0 (issue 10 item 2)."""
    query = doubling(levels, "n")
    assert len(query) <= BASE_LIMITS["max_document_bytes"]
    assert "LIMIT_EXCEEDED" in codes(await refused(server, query))


@pytest.mark.parametrize("levels", [63, 64])
async def test_fragment_doubling_over_alias_limit_is_refused(server: Server, levels: int) -> None:
    """The issue's exploit: a leaf of aliases that itself exceeds max_aliases, doubled 64
    times so that both the alias and the field counts wrap to 0."""
    leaf = " ".join(f"a{i}: payload" for i in range(BASE_LIMITS["max_aliases"] + 10))
    query = doubling(levels, leaf)
    assert len(query) <= BASE_LIMITS["max_document_bytes"]
    assert "LIMIT_EXCEEDED" in codes(await refused(server, query))


async def test_doubling_just_within_max_fields_is_served(server: Server) -> None:
    """The control: 2**8 = 256 copies of one field stay under max_fields (500)."""
    client = await Client.open(server)
    await client.init()
    await client.subscribe("ok", doubling(8, "n"), {"s": "double"})
    await client.ping_pong()
    await server.publish({"topic": "ticks:double", "data": {"n": 3}})
    assert (await client.next_data("ok")) == {"tick": {"n": 3}}
    await client.close()


@pytest.mark.parametrize(
    "fragments",
    [
        "fragment A on Tick { ...A }",
        "fragment A on Tick { ...B } fragment B on Tick { ...A }",
        "fragment A on Tick { n ...B } fragment B on Tick { ...C } fragment C on Tick { ...A }",
        "fragment A on Tick { node { ...N } } fragment N on Node { child { ...N } }",
    ],
    ids=["self", "pair", "triangle", "through-fields"],
)
async def test_fragment_cycles_are_refused(server: Server, fragments: str) -> None:
    query = "subscription($s: String!) { tick(stream: $s) { ...A } } " + fragments
    await refused(server, query)


async def test_document_over_max_document_bytes_is_refused(server: Server) -> None:
    padding = "#" + "x" * (BASE_LIMITS["max_document_bytes"] + 100) + "\n"
    assert "LIMIT_EXCEEDED" in codes(await refused(server, padding + TICK))


async def test_huge_token_count_within_the_size_limit_is_refused(server: Server) -> None:
    """12 KB of one-character tokens: a token limit, or validation, refuses it."""
    body = "n " * 6000
    query = "subscription($s: String!) { tick(stream: $s) { " + body + " } }"
    await refused(server, query[: BASE_LIMITS["max_document_bytes"] - 10] + " } }")


async def test_document_over_max_message_bytes_closes_1009(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    await client.subscribe("big", "#" + "x" * 20000 + "\n" + TICK, {"s": "gq"})
    assert (await client.closed()).code == 1009


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (TICK, {}),
        (TICK, {"s": 5}),
        (TICK, {"s": None}),
        (TICK, {"s": ["a"]}),
        (TICK, {"s": {"nested": "object"}}),
        ("subscription($s: String!, $n: Int!) { tick(stream: $s) { n } }", {"s": "a", "n": 2**40}),
        ("subscription($s: String!, $n: Int!) { tick(stream: $s) { n } }", {"s": "a", "n": 1.5}),
        ("subscription($s: Strin!) { tick(stream: $s) { n } }", {"s": "a"}),
        ("subscription($s: String!) { tick(stream: $t) { n } }", {"s": "a"}),
        ("subscription { tick(stream: 5) { n } }", None),
        ("subscription($s: String!) { tick(stream: $s) { n @skip(if: $x) } }", {"s": "a"}),
    ],
    ids=[
        "missing",
        "int-for-string",
        "null-for-non-null",
        "list-for-string",
        "object-for-string",
        "int-out-of-range",
        "float-for-int",
        "unknown-type",
        "undefined-variable",
        "literal-wrong-type",
        "undefined-in-directive",
    ],
)
async def test_wrong_variables_are_refused(server: Server, query: str, variables: object) -> None:
    if variables is None:
        variables = {}
    assert await refused(server, query, variables)


@pytest.mark.parametrize(
    "variables",
    ["a string", ["a", "list"], 5],
    ids=["string", "list", "number"],
)
async def test_variables_that_are_not_an_object_are_refused(
    server: Server, variables: object
) -> None:
    """`variables` must be a map: a mistyped field closes 4400 (docs: "Protocols")."""
    client = await Client.open(server)
    await client.init()
    await client.send(
        {"id": "v", "type": "subscribe", "payload": {"query": TICK, "variables": variables}}
    )
    assert (await client.closed()).code == 4400


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("query { health }", "OPERATION_NOT_SUPPORTED"),
        ("mutation { health }", None),
        ("subscription { __typename }", None),
        ("subscription($s: String!) { a: tick(stream: $s) { n } b: tick(stream: $s) { n } }", None),
        ("subscription A($s: String!) { tick(stream: $s) { n } } subscription B { x }", None),
        ("subscription($s: String!) { tick(stream: $s) { n @bogus } }", None),
        ("subscription($s: String!) { tick(stream: $s) { n } } fragment Unused on Tick { n }", None),
        ("subscription($s: String!) { tick(stream: $s) { n(arg: 1) } }", None),
        ("subscription($s: String!) { tick(stream: $s) { n { value } } }", None),
        ("subscription($s: String!) { tick(stream: $s) }", None),
        ("", None),
        ("subscription", None),
        ("{", None),
        ('subscription { tick(stream: "\\uD800") { n } }', None),
    ],
    ids=[
        "query",
        "mutation",
        "root-typename",
        "two-root-fields",
        "two-operations-no-name",
        "unknown-directive",
        "unused-fragment",
        "unknown-argument",
        "selection-on-scalar",
        "no-selection-on-object",
        "empty",
        "keyword-only",
        "unclosed",
        "lone-surrogate",
    ],
)
async def test_invalid_operations_are_refused(server: Server, query: str, code: str | None) -> None:
    errors = await refused(server, query)
    if code is not None:
        assert code in codes(errors)


async def test_unknown_operation_name_is_refused(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    await client.send(
        {
            "id": "op",
            "type": "subscribe",
            "payload": {"query": TICK, "variables": {"s": "a"}, "operationName": "Nope"},
        }
    )
    await client.error_for("op")
    await client.close()


async def test_server_settles(server: Server) -> None:
    await server.assert_settled()
