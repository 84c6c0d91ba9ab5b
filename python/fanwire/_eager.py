"""Helpers for the engine's async resolutions (private).

The engine steps an ``async def`` resolver's coroutine itself (from the
task that runs it, or inline for its first step when the event is published
on the loop's own thread). Awaitables that are not coroutines (a future a
plain function returned, an object with ``__await__``) are first wrapped in
:func:`awaiting`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


async def awaiting(awaitable: Awaitable[Any]) -> Any:
    """A coroutine returning what ``awaitable`` gives."""
    return await awaitable
