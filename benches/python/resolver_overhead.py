"""Overhead of one Python resolver call as the engine sees it, sync and async.

One subscription, no sockets (a `NativeConnection` drained in-process).
Per event: publish -> (resolver) -> projection -> frame in the outbox,
timed over N events; the resolver's own work is a pass-through (`return
event["data"]`). Overhead = per-event time with the resolver - without.
Every async resolution is an asyncio task whose first step runs inline:
`async` awaits nothing, so it finishes there and is delivered at once;
`async-suspending` awaits `asyncio.sleep(0)` once, so the task finishes it
on the next loop iteration and it is delivered from the loop's executor.
Async resolvers are timed until their frames are queued.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

from fanwire import Context, SubscriptionManager

SDL = """
type Query { ok: Boolean }
type Tick { seq: Int! ts: Float! pad: String }
type Subscription { tick(topic: String!): Tick @topic(name: "{topic}") }
"""
N = 20_000
RUNS = 5
DATA = {"seq": 1, "ts": 0.0, "pad": "x" * 150}


def build(kind: str) -> tuple[Any, Any]:
    manager = SubscriptionManager(SDL)
    if kind == "sync":

        @manager.subscription("tick")
        def tick(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
            data: dict[str, Any] = event["data"]
            return data

    elif kind == "async":

        @manager.subscription("tick")
        async def atick(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
            data: dict[str, Any] = event["data"]
            return data

    elif kind == "async-suspending":

        @manager.subscription("tick")
        async def stick(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
            await asyncio.sleep(0)  # suspends once, as a resolver awaiting IO would
            data: dict[str, Any] = event["data"]
            return data

    native = manager._native
    conn = native.connect("graphql-transport-ws")
    conn.on_text(json.dumps({"type": "connection_init"}))
    conn.on_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": 'subscription { tick(topic: "t") { seq ts pad } }'}}))
    conn.drain()
    return manager, conn


async def per_event(kind: str) -> tuple[float, float]:
    manager, conn = build(kind)
    manager.bind_event_loop()
    native = manager._native
    received = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(N):
        native.publish("t", DATA)
        if i % 256 == 255:
            if kind.startswith("async"):
                await asyncio.sleep(0)  # let the tasks run, as a server's loop would
            received += len(conn.drain()[0])
    while received < N:
        await conn.ready()
        received += len(conn.drain()[0])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    conn.dispose()
    return elapsed / N * 1e6, cpu / N * 1e6


async def main() -> None:
    kinds = ["none", "sync", "async", "async-suspending"]
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(RUNS):
        for kind in wall:
            w, c = await per_event(kind)
            wall[kind].append(w)
            cpu[kind].append(c)
    # CPU time (all threads of this process) is what a busy machine distorts least.
    base_w, base_c = statistics.median(wall["none"]), statistics.median(cpu["none"])
    print(f"events per run: {N}, runs: {RUNS}, medians; wall clock and process CPU time per event")
    print(f"{'no resolver':16} : {base_w:6.2f} us wall {base_c:6.2f} us cpu")
    for kind in kinds[1:]:
        w, c = statistics.median(wall[kind]), statistics.median(cpu[kind])
        print(
            f"{kind:16} : {w:6.2f} us wall {c:6.2f} us cpu"
            f"  -> overhead {w - base_w:6.2f} us wall {c - base_c:6.2f} us cpu"
        )
    print(
        "RESULT "
        + " ".join(f"{k}_wall_us={statistics.median(v):.2f}" for k, v in wall.items())
        + " "
        + " ".join(f"{k}_cpu_us={statistics.median(v):.2f}" for k, v in cpu.items())
    )


if __name__ == "__main__":
    asyncio.run(main())
