"""A PostgreSQL source configured from Python: a row written to a table
with the trigger of docs/postgres.sql reaches a gql client, through the
outbox or NOTIFY, with no publish call; closing the manager closes the
source's database connection."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from gql import Client, GraphQLRequest

from conftest import guard, serve, transport, until, until_async
from fanwire import PostgresSource, SubscriptionConfig, SubscriptionManager
from services import PG_URL, in_thread, install_postgres_sql, psql, unique

SCHEMA = """
type Query { ok: Boolean }
type Order { id: ID! cents: Int! }
type OrderChange { op: String! new: Order old: Order tenant_id: ID }
type Subscription { orderChanged(tenantId: ID!): OrderChange @topic(name: "orders:{tenantId}") }
"""
CHANGES = "subscription { orderChanged(tenantId: 5) { op new { id cents } old { cents } tenant_id } }"


def backends(name: str) -> int:
    """Database sessions with application name `name` (the source's)."""
    return int(psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'").strip())


@pytest.mark.parametrize("how", ["outbox", "notify"])
@pytest.mark.parametrize("mode", ["rust", "fastapi"])
async def test_a_row_change_reaches_a_client(how: str, mode: str, stack: AsyncExitStack) -> None:
    install_postgres_sql()
    table = unique("orders")
    outbox = f"{table}_events"
    channel = f"{table}_ch"
    target = outbox if how == "outbox" else channel
    psql(
        f"CREATE TABLE {table} (id int PRIMARY KEY, tenant_id int, user_id int, cents int);"
        f"SELECT fanwire_create_outbox('{outbox}');"
        f"CREATE TRIGGER fw AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION fanwire_row_change('orders:{{tenant_id}}', '{how}', '{target}');"
    )
    stack.callback(psql, f"DROP TABLE IF EXISTS {table}, {outbox}; DELETE FROM fanwire_outbox_cursors WHERE name = '{table}'")
    url = f"{PG_URL}?application_name={table}"
    source = (
        PostgresSource(url=url, outbox_table=outbox, cursor=table, poll_ms=200)
        if how == "outbox"
        else PostgresSource(url=url, channels=[channel])
    )
    manager = SubscriptionManager(SCHEMA, SubscriptionConfig(sources=[source]))
    async with AsyncExitStack() as serving:
        served = await serve(manager, mode, serving)
        await until("the source to connect", lambda: manager.health()["sources"]["postgres"]["state"] == "up")
        assert manager.health()["status"] == "ok"
        async with Client(transport=transport(served.url, "graphql-transport-ws")) as session:
            results = session.subscribe(GraphQLRequest(CHANGES))
            first = asyncio.ensure_future(anext(results))
            await until("the subscription", lambda: manager.stats()["subscriptions"] == 1)
            await in_thread(psql, f"INSERT INTO {table} VALUES (7, 5, 3, 1999), (8, 6, 3, 1)")
            assert await guard(first, "the INSERT") == {
                "orderChanged": {"op": "INSERT", "new": {"id": "7", "cents": 1999}, "old": None, "tenant_id": "5"}
            }
            await in_thread(psql, f"UPDATE {table} SET cents = 2500 WHERE id = 7")
            assert await guard(anext(results), "the UPDATE") == {
                "orderChanged": {"op": "UPDATE", "new": {"id": "7", "cents": 2500}, "old": {"cents": 1999}, "tenant_id": "5"}
            }
            await results.aclose()
        assert await in_thread(backends, table) == 1
    # Closing the manager (with the server or app) closes its connection.
    assert not manager.is_open

    async def disconnected() -> bool:
        return bool(await in_thread(backends, table) == 0)

    await until_async("the source's connection to close", disconnected)
