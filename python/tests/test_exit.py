"""Ctrl-C under uvicorn ends the process with exit code 0 every time.

The native module's runtime threads outlive the interpreter; one that was
attached to Python when the interpreter began to finalize used to kill the
process ("PyGILState_Release: thread state must be current", SIGABRT,
SIGSEGV or SIGBUS, in one exit of every few). A single exit proves little,
so each mode starts and stops its app 20 times, each time with a subscribed
client, and every exit must be clean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from snippets import client, close_code, free_port, recv, serving, stop

RUNS = 20

COMMON = '''
import sys
from typing import Any

import uvicorn

from fanwire import Context, SubscriptionManager

manager = SubscriptionManager(schema="""
type Query { ok: Boolean }
type Order { id: ID! cents: Int! }
type Subscription { orderCreated(tenantId: ID!): Order! }
""")


@manager.subscription("orderCreated", topic="orders:{tenantId}")
async def order_created(event: dict[str, Any], variables: dict[str, Any], context: Context) -> dict[str, Any]:
    return dict(event["data"])
'''

APPS = {
    "fastapi": COMMON
    + """
from fastapi import FastAPI

from fanwire.integrations.fastapi import SubscriptionRouterFactory

app = FastAPI()
app.include_router(SubscriptionRouterFactory.create(manager, path="/graphql"))
""",
    "starlette": COMMON
    + """
from starlette.applications import Starlette

from fanwire.integrations.starlette import create_subscription_app

app = create_subscription_app(Starlette(), manager)
""",
}

SERVE = """
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), ws="websockets-sansio")
"""

ORDERS = 'subscription { orderCreated(tenantId: "5") { id cents } }'


@pytest.mark.parametrize("mode", sorted(APPS))
def test_ctrl_c_under_uvicorn_exits_cleanly_every_time(mode: str, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APPS[mode] + SERVE)
    failed = []
    for run in range(RUNS):
        port = free_port()
        # A crash at exit then prints where each thread was.
        env = {"PYTHONFAULTHANDLER": "1"}
        with serving(Path(sys.executable), [str(app), str(port)], port, tmp_path / f"{run}.log", env) as running:
            with client(f"ws://127.0.0.1:{port}/graphql") as ws:
                ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": ORDERS}}))
                # Frames are handled in order: once the pong is back, so is the subscription.
                ws.send(json.dumps({"type": "ping"}))
                assert json.loads(recv(ws, "the pong")) == {"type": "pong"}
                exit_code = stop(running)
                # uvicorn closes WebSockets itself (1012) before the app's lifespan ends.
                assert close_code(ws) == 1012, running.output()
            if exit_code != 0:
                failed.append(f"run {run}: exit code {exit_code}\n{running.output()}")
    assert not failed, f"{len(failed)} of {RUNS} exits on Ctrl-C were not clean:\n" + "\n".join(failed)
