"""The subscription manager: schema, resolvers, publishing and serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias, TypeVar

from fanwire import _native
from fanwire._native import Context, Principal, RunningServer, SubscriptionConfig

Resolver: TypeAlias = Callable[
    [dict[str, Any], dict[str, Any], Context],
    "dict[str, Any] | None | Awaitable[dict[str, Any] | None]",
]
"""``(event, variables, context) -> dict``, plain or ``async``.

``event`` is ``{"topic", "data", "id", "seq"}`` (``data`` after security
filters); the returned dict is the field's value, projected through each
client's selection set by the engine."""

ConnectionPolicy: TypeAlias = Callable[[dict[str, Any], dict[str, str]], "Principal | bool | None"]
"""``(connection_params, headers) -> Principal | None``; raise
:class:`fanwire.ConnectionRejected` (or return ``False``) to refuse."""

R = TypeVar("R", bound=Resolver)
P = TypeVar("P", bound=ConnectionPolicy)


class SubscriptionManager:
    """A schema's subscription fields, their resolvers, and the engine that serves them.

    Declare resolvers (and a connection policy) first; the engine is built
    when the manager first publishes or serves, and is fixed from then on.
    """

    def __init__(self, schema: str, config: SubscriptionConfig | None = None) -> None:
        self._native = _native.Manager(schema, config)

    @property
    def config(self) -> SubscriptionConfig:
        """The limits and resolver timeout in force."""
        return self._native.config

    @property
    def fields(self) -> list[str]:
        """The schema's subscription fields."""
        return self._native.fields()

    def subscription(self, field: str, *, topic: str | None = None) -> Callable[[R], R]:
        """Registers the decorated function as the resolver of ``field``.

        ``topic`` binds the field to a topic template such as
        ``"orders:{tenantId}"`` (placeholders name the field's arguments),
        replacing any ``@topic`` in the SDL. The resolver runs once per
        group of identical subscriptions per event; ``async def`` resolvers
        run on the application's event loop.
        """

        def register(resolver: R) -> R:
            if topic is not None:
                self._native.bind_topic(field, topic)
            self._native.add_resolver(field, resolver)
            return resolver

        return register

    def connection_policy(self, policy: P) -> P:
        """Registers the decorated function as the connection policy.

        It gets the ``connection_init`` payload and the upgrade request's
        headers (lower-case names) and returns the connection's
        :class:`Principal` (``None`` accepts anonymously); raising
        :class:`fanwire.ConnectionRejected` closes the socket with 4403.
        """
        self._native.set_connection_policy(policy)
        return policy

    def bind_event_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Runs async resolvers on ``loop`` (default: the running loop).

        Serving and ``await publish(...)`` do this themselves; call it only
        before publishing from other threads with :meth:`publish_nowait`.
        """
        self._native.set_event_loop(loop if loop is not None else asyncio.get_running_loop())

    async def publish(self, topic: str, data: Mapping[str, Any] | Any, *, id: str | None = None) -> int:
        """Publishes one event to every subscription on ``topic``.

        Returns the number of frames queued at once (results of async
        resolvers follow). Raises :class:`fanwire.PublishError` when
        ``data`` is not JSON-serialisable or the topic is empty.
        """
        self._native.set_event_loop(asyncio.get_running_loop())
        return self._native.publish(topic, data, id)

    def publish_nowait(self, topic: str, data: Mapping[str, Any] | Any, *, id: str | None = None) -> int:
        """:meth:`publish` without awaiting; callable from sync code and other threads."""
        return self._native.publish(topic, data, id)

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 4000,
        *,
        publish_token: str | None = None,
        shutdown_timeout_ms: int | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> RunningServer:
        """Starts the Rust WebSocket server in this process and returns at once.

        It serves ``/graphql`` (both subprotocols), ``POST /publish``
        (bearer ``publish_token`` if set), ``/healthz`` and ``/metrics``.
        ``port=0`` picks a free port (see ``RunningServer.port``).
        ``config_file`` is a ``fanwire serve`` TOML file: its ``[server]``,
        ``[bus]``, ``[sources]``, ``[[plugins]]``, ``[plugin_runtime]`` and
        ``[auth]`` tables apply (plugins run beside the Python resolvers);
        its ``[limits]`` do not (``SubscriptionConfig`` does).
        """
        self._native.set_event_loop(asyncio.get_running_loop())
        return await self._native.start_server(
            host, port, publish_token, shutdown_timeout_ms, None, config_file
        )

    async def serve_async(
        self,
        host: str = "127.0.0.1",
        port: int = 4000,
        *,
        publish_token: str | None = None,
        shutdown_timeout_ms: int | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Serves until cancelled, then closes every client with 1001 (see :meth:`start`)."""
        server = await self.start(
            host,
            port,
            publish_token=publish_token,
            shutdown_timeout_ms=shutdown_timeout_ms,
            config_file=config_file,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 4000,
        *,
        publish_token: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Serves on the Rust server until Ctrl-C; async resolvers run on a new event loop.

        ``on_start`` is awaited on that loop once the server listens (start
        event sources there).
        """

        async def main() -> None:
            server = await self.start(host, port, publish_token=publish_token, config_file=config_file)
            print(f"fanwire listening on http://{server.host}:{server.port}/graphql", flush=True)
            try:
                if on_start is not None:
                    await on_start()
                await asyncio.Event().wait()
            finally:
                await server.stop()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    def metrics(self) -> str:
        """The engine's metrics in the Prometheus text format."""
        return self._native.metrics()

    def stats(self) -> dict[str, int]:
        """Live connections, subscriptions, groups and topics, and resolver outcomes."""
        return self._native.stats()
