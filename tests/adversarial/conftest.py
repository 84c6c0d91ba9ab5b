"""Fixtures for the adversarial suite: servers per module, checked after every test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from harness import Server

# Every server a module started; each is checked after each test of that module.
LIVE: list[Server] = []


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., Server]]:
    """Starts servers (warmed up, baseline RSS recorded) that stop when the module ends."""
    started: list[Server] = []

    def start(**options: Any) -> Server:
        server = Server(**options)
        started.append(server)
        LIVE.append(server)
        asyncio.run(server.warm_up())
        return server

    yield start
    for server in started:
        LIVE.remove(server)
        server.stop()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    """The module's server with the suite's base limits."""
    return start_server()


@pytest.fixture(autouse=True)
async def server_survives() -> AsyncIterator[None]:
    """After each test: every live server runs, /healthz answers, no task panicked."""
    yield
    for server in LIVE:
        await server.check_alive()
