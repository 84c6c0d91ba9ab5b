-- Fanwire: events from PostgreSQL (13 or newer). Idempotent: run it again to
-- upgrade. See docs/postgres.md for how to use it.

-- The outbox: one row per event. Fanwire reads rows in (xid, seq) order,
-- only below the oldest transaction still running, so a row committed late
-- is never skipped; NOTIFY on the table's name only wakes it.
CREATE OR REPLACE FUNCTION fanwire_create_outbox(tbl text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I (
             seq        bigserial PRIMARY KEY,
             xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
             topic      text NOT NULL,
             data       jsonb NOT NULL,
             id         text,
             created_at timestamptz NOT NULL DEFAULT now()
         )', tbl);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (xid, seq)', tbl || '_xid_seq', tbl);
END $$;

SELECT fanwire_create_outbox('fanwire_events');

-- Where each Fanwire outbox reader (`[sources.postgres] cursor`) stopped.
CREATE TABLE IF NOT EXISTS fanwire_outbox_cursors (
    name text PRIMARY KEY,
    xid  xid8 NOT NULL,
    seq  bigint NOT NULL
);

-- Publishes one event through an outbox table (default fanwire_events).
-- Call it from application SQL or triggers; it is part of the caller's
-- transaction, so a rolled-back transaction publishes nothing.
CREATE OR REPLACE FUNCTION fanwire_publish(
    topic text, data jsonb, outbox text DEFAULT 'fanwire_events', id text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %I (topic, data, id) VALUES ($1, $2, $3)', outbox)
        USING topic, data, id;
    PERFORM pg_notify(outbox, '');
END $$;

-- Publishes one event as a NOTIFY payload on `channel`: no table, but at
-- most 8000 bytes (larger raises an error and aborts the transaction) and
-- lost while Fanwire is disconnected.
CREATE OR REPLACE FUNCTION fanwire_notify(channel text, topic text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text := jsonb_build_object('topic', topic, 'data', data)::text;
BEGIN
    IF octet_length(payload) > 7999 THEN
        RAISE EXCEPTION 'fanwire: event on % is % bytes, over NOTIFY''s 8000', topic, octet_length(payload)
            USING HINT = 'publish it through the outbox (fanwire_publish) instead';
    END IF;
    PERFORM pg_notify(channel, payload);
END $$;

-- A row trigger publishing every change of a table:
--   data = {"op": "INSERT"|"UPDATE"|"DELETE", "table", "new", "old",
--           "tenant_id", "user_id"}   (new/old are the rows as JSON, or null)
-- Arguments:
--   1. topic, with {tenant_id} and {user_id} taken from the row
--      (default: the table's name)
--   2. 'outbox' (default) or 'notify'
--   3. the outbox table (default fanwire_events) or the NOTIFY channel
--      (default fanwire)
CREATE OR REPLACE FUNCTION fanwire_row_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_row jsonb := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END;
    old_row jsonb := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END;
    row_ jsonb := coalesce(new_row, old_row);
    mode text := coalesce(TG_ARGV[1], 'outbox');
    topic text := replace(replace(coalesce(TG_ARGV[0], TG_TABLE_NAME),
        '{tenant_id}', coalesce(row_->>'tenant_id', '')),
        '{user_id}', coalesce(row_->>'user_id', ''));
    data jsonb := jsonb_build_object(
        'op', TG_OP, 'table', TG_TABLE_NAME, 'new', new_row, 'old', old_row,
        'tenant_id', row_->'tenant_id', 'user_id', row_->'user_id');
BEGIN
    IF mode = 'notify' THEN
        PERFORM fanwire_notify(coalesce(TG_ARGV[2], 'fanwire'), topic, data);
    ELSIF mode = 'outbox' THEN
        PERFORM fanwire_publish(topic, data, coalesce(TG_ARGV[2], 'fanwire_events'));
    ELSE
        RAISE EXCEPTION 'fanwire_row_change: mode must be outbox or notify, got %', mode;
    END IF;
    RETURN NULL;
END $$;

-- For example:
--   CREATE TRIGGER orders_fanwire AFTER INSERT OR UPDATE OR DELETE ON orders
--       FOR EACH ROW EXECUTE FUNCTION fanwire_row_change('orders:{tenant_id}');
