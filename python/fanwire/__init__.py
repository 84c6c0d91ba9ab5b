"""Fanwire: GraphQL subscriptions on a Rust engine, with resolvers in Python.

Declare subscription fields and resolvers on a :class:`SubscriptionManager`,
publish events with :meth:`SubscriptionManager.publish`, and serve one of
three ways: the Rust server in-process (:meth:`SubscriptionManager.serve`),
FastAPI / Starlette (:mod:`fanwire.integrations`), or any framework through
a :class:`WebSocketAdapter` and :class:`GraphQLTransportWSHandler`.

Layout
------
- ``_native``: the compiled engine (Rust): manager, connections, server,
  config (limits, bus, sources, plugins, component resolvers), context and
  exception classes. Private; everything public is re-exported here.
- ``manager``: :class:`SubscriptionManager`, the resolver decorator,
  publishing and the in-process server.
- ``handler``: :class:`WebSocketAdapter`, the interface a framework's socket
  implements, and :class:`GraphQLTransportWSHandler`, which drives a
  connection over it.
- ``integrations.starlette`` / ``integrations.fastapi``: mounting on ASGI
  apps. Imported on demand only, so ``import fanwire`` never imports
  Starlette or FastAPI.
"""

from __future__ import annotations

from fanwire._native import (
    BusConfig,
    ComponentResolver,
    ConfigError,
    ConnectionRejected,
    Context,
    JwtAuth,
    Plugin,
    PluginRuntime,
    PostgresSource,
    Principal,
    PublishError,
    RunningServer,
    SchemaError,
    ServerError,
    SubscriptionConfig,
    __version__,
)
from fanwire.handler import GraphQLTransportWSHandler, WebSocketAdapter
from fanwire.manager import Resolver, SubscriptionManager

__all__ = [
    "BusConfig",
    "ComponentResolver",
    "ConfigError",
    "ConnectionRejected",
    "Context",
    "GraphQLTransportWSHandler",
    "JwtAuth",
    "Plugin",
    "PluginRuntime",
    "PostgresSource",
    "Principal",
    "PublishError",
    "Resolver",
    "RunningServer",
    "SchemaError",
    "ServerError",
    "SubscriptionConfig",
    "SubscriptionManager",
    "WebSocketAdapter",
    "__version__",
]
