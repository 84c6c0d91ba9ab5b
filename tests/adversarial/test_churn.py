"""Churn: clients that reconnect while numbered events flow, with history on.

README: with `history_per_topic` set each result carries `payload.extensions.seq`,
and a client that reconnects subscribes with `extensions: {"resumeFrom": SEQ}`
to get what it missed. docs/architecture.md: a resume "gives the events missed,
in order ... or an error, never a silent gap"; each event reaches a member
exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from harness import TICK, Client, Server, until, within

TOTAL = 1500
BATCH = 10
STAYERS = 4
CHURNERS = 8


@pytest.fixture(scope="module")
def history_server(start_server: Callable[..., Server]) -> Server:
    """A server keeping every event of the test in its per-topic history."""
    return start_server(limits={"history_per_topic": 2 * TOTAL})


async def stayer(client: Client, seen: list[int]) -> None:
    """Records every event number the client receives until the last one."""
    while not seen or seen[-1] < TOTAL - 1:
        payload = await client.next_message("s")
        seen.append(payload["data"]["tick"]["n"])


async def churner(server: Server, seen: list[int], rng: random.Random, ready: asyncio.Event) -> int:
    """Connects, reads a few events, drops the connection (cleanly or not), reconnects
    resuming from the last seq it saw; until it has the last event. Returns reconnects."""
    last_seq: int | None = None
    for attempt in range(2000):
        client = await Client.open(server)
        await client.init()
        extensions = None if last_seq is None else {"resumeFrom": last_seq}
        await client.subscribe("c", TICK, {"s": "churn"}, extensions)
        if last_seq is None:
            # Only the first subscribe needs the barrier (a resume's replay would come first).
            await client.ping_pong()
            ready.set()
        budget = rng.randint(1, 40)
        try:
            for _ in range(budget):
                payload = await client.next_message("c")
                seen.append(payload["data"]["tick"]["n"])
                last_seq = payload["extensions"]["seq"]
                if seen[-1] == TOTAL - 1:
                    await client.close()
                    return attempt
        except ConnectionClosed as exc:
            pytest.fail(f"the server closed a churning client: {exc}")
        how = rng.choice(["close", "abort", "complete-then-close"])
        if how == "abort":
            client.ws.transport.abort()
        elif how == "complete-then-close":
            await client.send({"id": "c", "type": "complete"})
            await client.close()
        else:
            await client.close()
    pytest.fail("a churner reconnected 2,000 times without seeing the last event")


async def test_reconnecting_clients_and_stayers_get_every_event_once_in_order(
    history_server: Server,
) -> None:
    server = history_server
    stayers = [await Client.open(server) for _ in range(STAYERS)]
    stayer_seen: list[list[int]] = [[] for _ in stayers]
    for client in stayers:
        await client.init()
        await client.subscribe("s", TICK, {"s": "churn"})
        await client.ping_pong()
    rng = random.Random(10)
    churner_seen: list[list[int]] = [[] for _ in range(CHURNERS)]
    readies = [asyncio.Event() for _ in range(CHURNERS)]
    tasks = [asyncio.create_task(stayer(c, s)) for c, s in zip(stayers, stayer_seen)]
    churners = [
        asyncio.create_task(churner(server, seen, random.Random(rng.random()), ready))
        for seen, ready in zip(churner_seen, readies)
    ]
    await within(asyncio.gather(*(r.wait() for r in readies)), "every churner's first subscribe")

    async def publish_all() -> None:
        for start in range(0, TOTAL, BATCH):
            await server.publish(
                [{"topic": "ticks:churn", "data": {"n": n}} for n in range(start, start + BATCH)]
            )

            # Lockstep with the stayers, so they never fall behind (a queue overflow
            # would be a legitimate loss, not the one under test).
            async def caught_up(end: int = start + BATCH) -> bool:
                return all(len(seen) >= end for seen in stayer_seen)

            await until(caught_up, f"the stayers to receive events up to {start + BATCH}")

    await within(publish_all(), "the numbered publish", 240)
    reconnects = await within(asyncio.gather(*churners), "every churner to see the last event", 120)
    await within(asyncio.gather(*tasks), "the stayers to finish")
    for seen in stayer_seen:
        assert seen == list(range(TOTAL))
    for seen in churner_seen:
        assert seen == list(range(TOTAL)), first_difference(seen)
    assert sum(reconnects) >= CHURNERS * 10, reconnects
    for client in stayers:
        await client.close()


def first_difference(seen: list[int]) -> str:
    """Where a received sequence first departs from 0, 1, 2, ..."""
    for i, n in enumerate(seen):
        if n != i:
            return f"at position {i}: got {n} (around: {seen[max(0, i - 3) : i + 3]})"
    return f"stops after {len(seen)} events"


@pytest.mark.parametrize(
    "resume_from",
    [-1, 2**64, 2**63, 1e300, 1.5, "12", None, [1], {"seq": 1}, True],
    ids=["negative", "2^64", "2^63", "1e300", "fraction", "string", "null", "list", "object", "bool"],
)
async def test_absurd_resume_from_is_answered(history_server: Server, resume_from: object) -> None:
    """An error for the id, or a 4400 close; never a crash, never a silent hang."""
    client = await Client.open(history_server)
    await client.init()
    await client.subscribe("r", TICK, {"s": "churn"}, {"resumeFrom": resume_from})
    await client.send({"type": "ping"})
    try:
        msg = await within(client.ws.recv(), "an answer to an absurd resumeFrom")
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 4400, exc
        return
    assert '"pong"' in str(msg) or '"error"' in str(msg), msg
    await client.close()


async def test_server_settles(history_server: Server) -> None:
    await history_server.assert_settled()
