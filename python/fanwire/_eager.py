"""Continuing a coroutine that was started eagerly (private).

The engine runs an ``async def`` resolver's first step inline when the event
is published on the loop's own thread (as Python 3.12's eager tasks do): a
resolver that finishes without suspending costs no task at all. One that
suspends is handed to a task through :func:`resumed`, which carries on from
the object it yielded.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class _Resume:
    """An awaitable that drives ``coro`` on, starting from its first yield."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancellation and throws go to the resolver
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def resumed(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """A coroutine (for ``create_task``) finishing ``coro``, which yielded ``yielded``."""
    return await _Resume(coro, yielded)
