"""The package itself: imports, configuration, typed exceptions, declaration rules."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

import fanwire
from fanwire import (
    BusConfig,
    ConfigError,
    JwtAuth,
    Plugin,
    PluginRuntime,
    PostgresSource,
    PublishError,
    SchemaError,
    SubscriptionConfig,
    SubscriptionManager,
)

ROOT = Path(__file__).resolve().parents[2]
SDL = """
type Query { ok: Boolean }
type Order { id: ID! }
type Subscription { orderCreated(tenantId: ID!): Order }
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    # From a neutral folder, so the import is the installed package's.
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir()
    )


def test_import_fanwire_imports_no_web_framework() -> None:
    done = run_python(
        "import sys, fanwire\n"
        "m = fanwire.SubscriptionManager('type Query { a: Int } type Subscription { t: Int }')\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'fastapi', 'starlette', 'uvicorn'})\n"
        "print(bad)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "extra"), [("starlette", "starlette"), ("fastapi", "fastapi")])
def test_integrations_name_the_extra_to_install(module: str, extra: str) -> None:
    done = run_python(
        "import sys\n"
        f"sys.modules['{module}'] = None  # as if it were not installed\n"
        f"import fanwire.integrations.{module}\n"
    )
    assert done.returncode != 0
    assert f"pip install 'fanwire[{extra}]'" in done.stderr


def test_public_names() -> None:
    for name in fanwire.__all__:
        assert hasattr(fanwire, name), name
    assert issubclass(SchemaError, ValueError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(PublishError, ValueError)


def test_config_defaults_are_the_hosts() -> None:
    documented = tomllib.loads((ROOT / "examples/standalone/fanwire.toml").read_text())["limits"]
    config = SubscriptionConfig()
    for key, value in documented.items():
        assert getattr(config, key) == value, key
    assert config.resolver_timeout_ms == 5000


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"queue_depth": 0}, "queue_depth"),
        ({"max_connections": -1}, "max_connections"),
        ({"subscribes_per_second": float("nan")}, "subscribes_per_second"),
        ({"max_document_bytes": 10**6}, "max_document_bytes"),
        ({"resolver_timeout_ms": 0}, "resolver_timeout_ms"),
        ({"max_resolutions": 0}, "max_resolutions"),
    ],
)
def test_invalid_config_is_a_clear_value_error(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        SubscriptionConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(err.value, ConfigError)


def test_schema_errors() -> None:
    with pytest.raises(SchemaError, match="invalid schema"):
        SubscriptionManager("type Query {")
    with pytest.raises(SchemaError, match="no subscription root type"):
        SubscriptionManager("type Query { a: Int }")
    manager = SubscriptionManager(SDL)
    with pytest.raises(SchemaError, match="no field `nope`"):
        manager.subscription("nope")(lambda e, v, c: {})
    with pytest.raises(SchemaError, match="not an argument"):
        manager.subscription("orderCreated", topic="orders:{tenant}")(lambda e, v, c: {})
    manager.subscription("orderCreated")(lambda e, v, c: {})
    with pytest.raises(SchemaError, match="already has a resolver"):
        manager.subscription("orderCreated")(lambda e, v, c: {})


async def test_publish_errors_and_declaring_after_start() -> None:
    manager = SubscriptionManager(SDL)
    with pytest.raises(PublishError, match="not JSON-serialisable"):
        await manager.publish("orders:1", {"when": object()})
    with pytest.raises(PublishError, match="empty"):
        manager.publish_nowait("", {})
    with pytest.raises(PublishError, match="JSON number"):
        manager.publish_nowait("t", {"x": float("inf")})
    assert await manager.publish("orders:1", {"id": 1}) == 0
    with pytest.raises(RuntimeError, match="before the manager serves"):
        manager.subscription("orderCreated")(lambda e, v, c: {})


async def test_server_start_errors_are_typed() -> None:
    manager = SubscriptionManager(SDL)
    running = await manager.start("127.0.0.1", 0)
    try:
        with pytest.raises(fanwire.ServerError, match="cannot listen"):
            await manager.start("127.0.0.1", running.port)
        with pytest.raises(ConfigError, match="IP address"):
            await manager.start("not a host", 0)
    finally:
        await running.stop()


async def test_the_in_process_server_reads_a_host_config_file(tmp_path: Path) -> None:
    import asyncio
    import json
    import urllib.error
    import urllib.request

    config = tmp_path / "fanwire.toml"
    config.write_text('[server]\nmax_publish_bytes = 100\npublish_token = "t0k"\n')
    manager = SubscriptionManager(SDL)
    running = await manager.start("127.0.0.1", 0, config_file=config)

    def post(body: bytes, token: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{running.port}/publish",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as err:
            with err:
                return err.code

    try:
        small = json.dumps({"topic": "orders:1", "data": {}}).encode()
        assert await asyncio.to_thread(post, small, "wrong") == 401
        assert await asyncio.to_thread(post, small, "t0k") == 200
        big = json.dumps({"topic": "orders:1", "data": {"pad": "x" * 200}}).encode()
        assert await asyncio.to_thread(post, big, "t0k") == 413
    finally:
        await running.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisen = 1\n")
    with pytest.raises(ConfigError, match="lisen"):
        await SubscriptionManager(SDL).start("127.0.0.1", 0, config_file=bad)


def test_bus_source_and_plugin_settings_have_the_hosts_names_and_defaults() -> None:
    toml = tomllib.loads((ROOT / "examples/standalone/fanwire.toml").read_text())
    for key, value in toml["bus"].items():
        assert getattr(BusConfig(), key) == value, key
    for key, value in toml["plugin_runtime"].items():
        assert getattr(PluginRuntime(), key) == value, key
    config = SubscriptionConfig()
    assert repr(config.bus) == repr(BusConfig())
    assert config.sources == [] and config.plugins == [] and config.jwt is None
    # The host's own file reads into the same values.
    from_file = SubscriptionConfig.from_toml(ROOT / "examples/standalone/fanwire.toml")
    assert repr(from_file.bus) == repr(BusConfig())
    assert repr(from_file.plugin_runtime) == repr(PluginRuntime())
    assert from_file.queue_depth == config.queue_depth

    pg = PostgresSource(url="postgres://x@127.0.0.1/db", channels=("orders",), outbox_table="fanwire_events")
    assert (pg.channels, pg.outbox_table, pg.cursor, pg.poll_ms, pg.batch) == (
        ["orders"],
        "fanwire_events",
        "fanwire",
        1000,
        500,
    )
    assert repr(BusConfig.from_url("redis://127.0.0.1:6379/0")) == repr(BusConfig(kind="redis", url="redis://127.0.0.1:6379/0"))
    assert repr(BusConfig.from_url("memory")) == repr(BusConfig())
    with pytest.raises(ConfigError, match="expected nats://"):
        BusConfig.from_url("kafka://x")
    bus = BusConfig(kind="nats", url="nats://127.0.0.1:4222", buffer=5)
    assert (bus.kind, bus.url, bus.buffer, bus.history) == ("nats", "nats://127.0.0.1:4222", 5, 100_000)
    assert SubscriptionConfig(bus=bus, sources=[pg]).sources[0].channels == ["orders"]


def test_plugin_paths_resolve_against_the_folder(tmp_path: Path) -> None:
    (tmp_path / "f.wasm").write_bytes(b"\x00asm")
    config = SubscriptionConfig(
        plugins=[Plugin("f.wasm", "event-filter", topics=["orders:*"], config={"field": "tenant"})],
        plugin_runtime=PluginRuntime(folder=tmp_path),
    )
    (spec,) = config.plugins
    assert (spec.path, spec.kind, spec.topics, spec.config, spec.order) == (
        str(tmp_path / "f.wasm"),
        "event-filter",
        ["orders:*"],
        {"field": "tenant"},
        0,
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BusConfig(kind="kafka"),  # type: ignore[arg-type]
         "unknown variant `kafka`"),
        (lambda: BusConfig(strem="x"),  # type: ignore[call-arg]
         "unknown field `strem`"),
        (lambda: BusConfig(stream="a.b"), "bus.stream"),
        (lambda: BusConfig(buffer=0), "bus.buffer"),
        (lambda: BusConfig(history=-1), "BusConfig.history: invalid value: integer `-1`"),
        (lambda: PostgresSource(channels=["x"]),  # type: ignore[call-arg]
         "url is required"),
        (lambda: PostgresSource(url="postgres://x"), "nothing to read"),
        (lambda: PostgresSource(url="postgres://x", channels=["x"], poll_ms=1), "poll_ms"),
        (lambda: Plugin("x.wasm", "filter"),  # type: ignore[arg-type]
         "unknown variant `filter`"),
        (lambda: PluginRuntime(admin_token=""), "admin_token"),
        (lambda: PluginRuntime(memory_mb=512), "memory_mb"),
        (lambda: PluginRuntime(max_memory_mb=8192), "max_memory_mb must be between 1 and 4096"),
        (lambda: PluginRuntime(cache_dir=""), "cache=False"),
        (lambda: JwtAuth(algorithm="HS256"), "non-empty secret"),
        (lambda: JwtAuth(algorithm="RS256", public_key_file="/nonexistent.pem"), "nonexistent.pem"),
        (lambda: JwtAuth(algorithm="none", secret="x"),  # type: ignore[arg-type]
         "unknown variant `none`"),
        (lambda: SubscriptionConfig(plugins=[Plugin("/nonexistent.wasm", "event-filter")]), "no such file"),
        (
            lambda: SubscriptionConfig(sources=[PostgresSource(url="postgres://x", channels=["a"])] * 2),
            "one PostgresSource",
        ),
    ],
)
def test_invalid_bus_source_and_plugin_settings_are_config_errors(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


async def test_publishing_before_the_broker_bus_runs_is_a_publish_error() -> None:
    manager = SubscriptionManager(SDL, SubscriptionConfig(bus=BusConfig(kind="nats")))
    assert manager.health()["status"] == "closed"
    manager.subscription("orderCreated")(lambda e, v, c: {})  # health() froze nothing
    with pytest.raises(PublishError, match="not running"):
        manager.publish_nowait("orders:1", {})
    assert manager.health()["status"] == "closed"


async def test_a_config_file_may_not_override_the_managers_bus(tmp_path: Path) -> None:
    config = tmp_path / "fanwire.toml"
    config.write_text('[bus]\nkind = "redis"\n')
    manager = SubscriptionManager(SDL)
    try:
        with pytest.raises(ConfigError, match=re.escape("config_file sets [bus]")):
            await manager.start("127.0.0.1", 0, config_file=config)
        # The same file given to the manager is fine.
        same = SubscriptionConfig.from_toml(config)
        assert same.bus.kind == "redis"
    finally:
        await manager.close()
