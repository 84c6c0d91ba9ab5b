"""The subscription manager: schema, resolvers, publishing and serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
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
    The bus, event sources, plugins and component resolvers of its config
    run while the manager is open: :meth:`open` / :meth:`close`, or
    ``async with manager:``; serving and ``await publish(...)`` open it
    themselves. A field bound to a :class:`ComponentResolver` in the config
    takes no Python resolver, and its field must be one of the schema's
    (``ConfigError`` otherwise).
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
        run on the application's event loop. A field that the config binds
        to a :class:`ComponentResolver` is refused (``ConfigError``).
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

    @property
    def is_open(self) -> bool:
        """Whether the bus, sources and plugins are running."""
        return self._native.is_open()

    async def open(self) -> None:
        """Starts the config's bus, event sources and plugins; idempotent.

        Loads the plugins (``ConfigError`` if one does not load), then
        connects the bus and waits until it has read the broker's retained
        history (up to ``BusConfig.startup_timeout_ms``). An unreachable
        broker or database is not an error: the manager serves degraded,
        retries with backoff and says so in :meth:`health`.
        """
        if not self._native.is_open():
            self._native.set_event_loop(asyncio.get_running_loop())
            await self._native.open()

    async def close(self) -> None:
        """Stops the bus and event sources (closing their connections) and the
        plugin folder watcher; idempotent. Plugins stay in force."""
        await self._native.close()

    async def __aenter__(self) -> SubscriptionManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def bind_event_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Runs async resolvers on ``loop`` (default: the running loop).

        Serving and ``await publish(...)`` do this themselves; call it only
        before publishing from other threads with :meth:`publish_nowait`.
        """
        self._native.set_event_loop(loop if loop is not None else asyncio.get_running_loop())

    async def publish(self, topic: str, data: Mapping[str, Any] | Any, *, id: str | None = None) -> int:
        """Publishes one event through the bus, as the host's ``POST /publish`` does.

        With the in-process bus (the default) the event is accepted into
        the node's backlog (numbered there when history is kept) and fanned
        out by its dispatcher, in publish order; this waits for that and
        returns the number of frames it queued or wrote (results of async
        resolvers follow: they are not waited for). When the backlog is
        full (the dispatcher is behind: slow resolvers, a saturated
        machine) it first waits for room, up to ``publish_wait_ms``, then
        raises :class:`fanwire.PublishError`. With NATS or Redis it returns 0 once
        the broker has stored the event (or, while the broker is down, once
        this node holds it for later); every node, this one included, then
        delivers it with the broker's sequence number. ``id`` deduplicates
        (the broker bus gives one when it is missing). Raises
        :class:`fanwire.PublishError` when ``data`` is not
        JSON-serialisable, the topic is empty, or the bus refuses (its
        buffer is full while the broker is down).
        """
        self._native.set_event_loop(asyncio.get_running_loop())
        if not self._native.is_open():
            await self.open()
        result = self._native.publish_async(topic, data, id)
        if isinstance(result, int):
            return result
        return await result

    def publish_nowait(self, topic: str, data: Mapping[str, Any] | Any, *, id: str | None = None) -> int:
        """:meth:`publish` without awaiting; callable from sync code and other threads.

        Costs no task when the bus answers at once. It returns 0 once the
        event is accepted (the dispatcher fans it out next), or the frames
        it queued when the manager is not open yet (this thread then
        dispatches it). Raises ``PublishError`` as :meth:`publish` does, and
        at once when the node's backlog is full (it never waits: retry, or
        use :meth:`publish`). A broker's acknowledgement is awaited in the
        background (a failure there is logged on the ``fanwire`` logger);
        with NATS or Redis the manager must be open.
        """
        return self._native.publish(topic, data, id)

    def health(self) -> dict[str, Any]:
        """What the host's ``/healthz`` says: ``status`` (``ok``; ``degraded``
        while the broker or database is unreachable; ``closed`` before
        :meth:`open`), ``connections``, ``subscriptions``, ``bus`` and
        ``sources`` (each with its ``state`` and last ``error``)."""
        return self._native.health()

    async def reload_plugins(self) -> dict[str, Any] | None:
        """Reloads every plugin from its file now (a changed file is also
        picked up by the folder watcher, when ``PluginRuntime.watch``); a
        version that does not load is rejected and the old one stays.
        ``None`` without plugins or before :meth:`open`."""
        return await self._native.reload_plugins()

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
        (bearer ``publish_token`` if set; through the manager's bus),
        ``/healthz``, ``/metrics`` and, with ``PluginRuntime(admin_token=...)``,
        ``POST /admin/plugins/reload``. ``port=0`` picks a free port (see
        ``RunningServer.port``). Opens the manager first (see :meth:`open`);
        stopping the server leaves it open. ``config_file`` is a ``fanwire
        serve`` TOML file whose ``[server]`` table applies; its bus, sources,
        plugins and limits belong in the manager's config
        (``SubscriptionConfig.from_toml``).
        """
        await self.open()
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
        """Serves until cancelled, then closes every client with 1001 and closes
        the manager (see :meth:`start`)."""
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
            await self.close()

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
                await self.close()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    def metrics(self) -> str:
        """The engine's metrics (and the bus's, while open) in the Prometheus text format."""
        return self._native.metrics()

    def stats(self) -> dict[str, int]:
        """Live connections, subscriptions, groups and topics, and resolver outcomes."""
        return self._native.stats()
