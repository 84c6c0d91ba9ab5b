"""Protocol abuse: what the docs' table of close codes promises, tried with hostile frames.

docs/architecture.md, "Protocols": invalid JSON, unknown type, missing or
mistyped fields and binary frames close 4400; subscribe before the ack 4401;
an active id reused 4409; a second connection_init 4429; no init in time 4408;
a subprotocol not offered 4406; over max_message_bytes 1009.
"""

from __future__ import annotations

import json

import pytest

from harness import TICK, Client, Server, raw_upgrade, within, ws_frame

BAD_JSON = [
    "not json",
    "{",
    '{"type": "connection_init"',
    "[]",
    "null",
    "42",
    '"connection_init"',
    '{"type": 5}',
    '{"type": null}',
    '{"type": "connection_init", "type": "subscribe"}',
    "\ufeff" + '{"type": "connection_init"}',
    # Deep nesting: a recursive parser must refuse it, not overflow its stack.
    "[" * 8000 + "]" * 8000,
    '{"type": "connection_init", "payload": ' + "[" * 8000 + "]" * 8000 + "}",
]


@pytest.mark.parametrize("text", BAD_JSON, ids=range(len(BAD_JSON)))
async def test_bad_json_before_init_closes_4400(server: Server, text: str) -> None:
    client = await Client.open(server)
    await client.send(text)
    assert (await client.closed()).code == 4400


AFTER_INIT = [
    "not json",
    "[" * 8000 + "]" * 8000,
    '{"type": "subscribe"}',
    '{"type": "subscribe", "id": "1"}',
    '{"type": "subscribe", "id": 1, "payload": {"query": "subscription { tick(stream: \\"a\\") { n } }"}}',
    '{"type": "subscribe", "id": "1", "payload": "subscription { x }"}',
    '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
    '{"type": "subscribe", "id": null, "payload": {"query": "x"}}',
    '{"type": "complete"}',
    '{"type": "complete", "id": ["1"]}',
    '{"type": "start", "id": "1", "payload": {"query": "x"}}',
    '{"type": "SUBSCRIBE", "id": "1", "payload": {"query": "x"}}',
    '{"type": "next", "id": "1", "payload": {}}',
    '{"type": "error", "id": "1", "payload": []}',
    '{"type": ""}',
]


@pytest.mark.parametrize("text", AFTER_INIT, ids=range(len(AFTER_INIT)))
async def test_bad_or_unknown_message_after_init_closes_4400(server: Server, text: str) -> None:
    client = await Client.open(server)
    await client.init()
    await client.send(text)
    assert (await client.closed()).code == 4400


@pytest.mark.parametrize("init_first", [False, True])
async def test_binary_frame_closes_4400(server: Server, init_first: bool) -> None:
    client = await Client.open(server)
    if init_first:
        await client.init()
    await client.send(json.dumps({"type": "connection_init"}).encode())
    assert (await client.closed()).code == 4400


async def test_subscribe_before_init_closes_4401(server: Server) -> None:
    client = await Client.open(server)
    await client.subscribe("1", TICK, {"s": "early"})
    assert (await client.closed()).code == 4401


async def test_second_init_closes_4429(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    await client.send({"type": "connection_init"})
    assert (await client.closed()).code == 4429


async def test_init_flood_closes_4429_without_a_second_ack(server: Server) -> None:
    client = await Client.open(server)
    for _ in range(50):
        await client.send({"type": "connection_init"})
    closed = await client.closed()
    assert closed.code == 4429
    assert [f["type"] for f in closed.frames] == ["connection_ack"]


async def test_duplicate_active_id_closes_4409(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    await client.subscribe("dup", TICK, {"s": "dup"})
    await client.subscribe("dup", TICK, {"s": "dup"})
    assert (await client.closed()).code == 4409


async def test_id_is_free_again_after_complete(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    for round_ in range(20):
        await client.subscribe("same", TICK, {"s": "reuse"})
        await client.send({"id": "same", "type": "complete"})
    await client.subscribe("same", TICK, {"s": "reuse"})
    await client.ping_pong()
    await server.publish({"topic": "ticks:reuse", "data": {"n": 7}})
    assert (await client.next_data("same"))["tick"]["n"] == 7
    await client.close()


async def test_complete_for_unknown_ids_is_ignored(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    for i in range(200):
        await client.send({"id": f"never-{i}", "type": "complete"})
    await client.ping_pong()
    await client.close()


async def test_no_init_in_time_closes_4408(server: Server) -> None:
    client = await Client.open(server)
    assert (await client.closed("the init timeout close")).code == 4408


async def test_no_subprotocol_offered_closes_4406(server: Server) -> None:
    client = await Client.open(server, subprotocols=None)
    assert (await client.closed()).code == 4406


async def test_unknown_subprotocol_only_closes_4406(server: Server) -> None:
    client = await Client.open(server, subprotocols=["graphql-evil"])
    assert (await client.closed()).code == 4406


async def test_ping_flood_is_answered_in_order_or_closed(server: Server) -> None:
    """5,000 pipelined pings with payloads, read only afterwards: all pongs in order, or a close."""
    client = await Client.open(server)
    await client.init()
    count = 5000
    for i in range(count):
        await client.send({"type": "ping", "payload": {"i": i, "pad": "x" * 64}})
    received = 0
    while received < count:
        msg = await client.recv(f"pong {received} of {count}")
        assert msg["type"] == "pong", msg
        assert msg["payload"]["i"] == received
        received += 1
    await client.ping_pong()
    await client.close()


async def test_websocket_ping_flood_leaves_the_connection_working(server: Server) -> None:
    """20,000 control pings (opcode 9) sent raw; the protocol still answers afterwards."""
    reader, writer = await raw_upgrade(server)
    writer.write(ws_frame(json.dumps({"type": "connection_init"}).encode()))
    ping = ws_frame(b"p" * 125, opcode=9)
    for _ in range(200):
        writer.write(ping * 100)
        await within(writer.drain(), "the server to take the pings")
    writer.write(ws_frame(json.dumps({"type": "ping", "payload": {"last": True}}).encode()))
    await writer.drain()

    async def find_last_pong() -> None:
        buffer = b""
        while b'"last":true' not in buffer:
            chunk = await reader.read(65536)
            assert chunk, "the server closed the connection during a ping flood"
            buffer = buffer[-64:] + chunk

    await within(find_last_pong(), "the pong to the protocol ping sent after the flood")
    writer.close()


@pytest.mark.parametrize(
    ("frame", "codes"),
    [
        # Text that is not UTF-8: 1007 (RFC 6455 8.1).
        (ws_frame(b'{"type": "\xff\xfe"}'), {1007}),
        # An unmasked client frame, a reserved bit, a reserved opcode: 1002.
        (b"\x81\x02{}", {1002}),
        (b"\xc1\x82\0\0\0\0{}", {1002}),
        (b"\x83\x82\0\0\0\0{}", {1002}),
        # A control frame longer than 125 bytes, and a fragmented one: 1002.
        (ws_frame(b"p" * 126, opcode=9), {1002}),
        (ws_frame(b"p", opcode=9, fin=False), {1002}),
        # A continuation with nothing to continue: 1002.
        (ws_frame(b"{}", opcode=0), {1002}),
    ],
    ids=["non-utf8", "unmasked", "rsv1", "opcode3", "long-ping", "fragmented-ping", "orphan-cont"],
)
async def test_broken_framing_is_closed_with_a_protocol_code(
    server: Server, frame: bytes, codes: set[int]
) -> None:
    reader, writer = await raw_upgrade(server)
    writer.write(ws_frame(json.dumps({"type": "connection_init"}).encode()) + frame)
    await writer.drain()

    async def close_code() -> int | None:
        data = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        # Skip the ack (a text frame); the close frame is opcode 8.
        while data:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            offset = 2
            if length == 126:
                length, offset = int.from_bytes(data[2:4], "big"), 4
            if opcode == 8:
                return int.from_bytes(data[offset : offset + 2], "big")
            data = data[offset + length :]
        return None

    code = await within(close_code(), "the server to close a broken connection")
    writer.close()
    # RFC 6455 7.1.7: the endpoint SHOULD send a close frame, and Fanwire does,
    # so a client learns why rather than seeing the TCP connection drop.
    assert code in codes, f"close code {code}, expected one of {codes}"


async def test_oversized_message_closes_1009(server: Server) -> None:
    client = await Client.open(server)
    await client.init()
    await client.send({"type": "ping", "payload": "x" * 20000})
    assert (await client.closed()).code == 1009


async def test_fragmented_oversized_message_closes_1009(server: Server) -> None:
    """A message over the limit in 1 KB continuation frames, none of them large alone."""
    reader, writer = await raw_upgrade(server)
    writer.write(ws_frame(b'{"type":"ping","payload":"', opcode=1, fin=False))
    for _ in range(40):
        writer.write(ws_frame(b"x" * 1024, opcode=0, fin=False))
    try:
        writer.write(ws_frame(b'"}', opcode=0, fin=True))
        await within(writer.drain(), "the server to take the fragments")
    except ConnectionError:
        pass

    async def read_close() -> bytes:
        data = b""
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            data += chunk
        return data

    data = await within(read_close(), "the 1009 close")
    writer.close()
    assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 1009, data[:16]


@pytest.mark.parametrize("text", ["not json", '{"type": "bogus"}', '{"type": "subscribe"}'])
async def test_legacy_protocol_garbage_closes_4400(server: Server, text: str) -> None:
    client = await Client.open(server, subprotocols=["graphql-ws"])
    await client.send(text)
    assert (await client.closed()).code == 4400


async def test_legacy_start_before_init_gets_errors_and_no_data(server: Server) -> None:
    """The legacy `graphql-ws` subprotocol: a `start` before init is refused as an error
    result for that id; an event published then never reaches it."""
    client = await Client.open(server, subprotocols=["graphql-ws"])
    query = 'subscription { tick(stream: "legacy") { n } }'
    await client.send({"type": "start", "id": "1", "payload": {"query": query}})
    refusal = await client.recv("the legacy error result")
    assert refusal["type"] == "data" and refusal["payload"]["data"] is None, refusal
    assert refusal["payload"]["errors"], refusal
    assert (await client.recv("the legacy complete"))["type"] == "complete"
    await server.publish({"topic": "ticks:legacy", "data": {"n": 1}})
    await client.send({"type": "connection_terminate"})
    closed = await client.closed()
    assert closed.code == 1000, closed
    assert not closed.frames, closed.frames


async def test_server_settles(server: Server) -> None:
    await server.assert_settled()
