//! The PostgreSQL source: LISTEN on channels (each notification is an
//! event) and read an outbox table (NOTIFY only wakes the reader), and
//! publish what arrives on the bus.
//!
//! NOTIFY alone loses what is sent while the listener is disconnected and
//! carries at most 8000 bytes. The outbox has neither limit: rows are read
//! in `(xid, seq)` order, only below the oldest transaction still running
//! (`pg_snapshot_xmin`), so a row committed late by a long transaction is
//! never skipped; the position is saved in `fanwire_outbox_cursors`, so a
//! reconnect or a restart catches up where it stopped. Outbox events carry
//! the id `<table>:<seq>`, so a row published twice (two nodes, or a retry)
//! is delivered once.

use std::sync::Arc;
use std::time::Duration;

use fanwire_core::Event;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::config::PostgresConfig;
use crate::health::{Backoff, BusMetrics, Health, Status};
use crate::{stopped, Bus, BusError, Published, Source};

/// A running PostgreSQL source.
#[derive(Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
    health: Health,
}

/// The outbox position: the last row published.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    xid: String,
    seq: i64,
}

impl Source for PostgresSource {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn status(&self) -> Status {
        self.health.status(None)
    }
}

/// Quotes an identifier (a channel or table name).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The event a notification stands for: a `/publish`-shaped object
/// (`topic`, `data`, optional `id`) as is; any other JSON as the `data` of
/// an event on the channel's topic; anything else is invalid.
pub fn notification_event(channel: &str, payload: &str) -> Result<Event, String> {
    let value: Value = serde_json::from_str(payload)
        .map_err(|e| format!("notification on {channel:?} is not JSON: {e}"))?;
    if let Value::Object(obj) = &value {
        let shaped = obj
            .get("topic")
            .is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty()))
            && obj.contains_key("data")
            && obj
                .keys()
                .all(|k| matches!(k.as_str(), "topic" | "data" | "id"))
            && obj
                .get("id")
                .is_none_or(|id| id.is_string() || id.is_null());
        if shaped {
            if let Ok(event) = serde_json::from_value::<Event>(value.clone()) {
                return Ok(event);
            }
        }
    }
    Ok(Event::new(channel, value))
}

impl PostgresSource {
    /// Starts listening; the task reconnects with backoff until `stop`.
    pub fn start(
        config: PostgresConfig,
        bus: Arc<dyn Bus>,
        metrics: Arc<BusMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<PostgresSource> {
        let source = Arc::new(PostgresSource {
            config,
            health: Health::new("postgres", "postgres", metrics),
        });
        tokio::spawn(source.clone().run(bus, stop));
        source
    }

    async fn run(self: Arc<Self>, bus: Arc<dyn Bus>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        let mut cursor = None;
        loop {
            match self
                .session(&*bus, &mut cursor, &mut stop, &mut backoff)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(source = "postgres", cursor = %self.config.cursor, position = ?cursor, error = %e, "session ended");
                    self.health.down(e)
                }
            }
            self.health.retry();
            tokio::select! {
                _ = tokio::time::sleep(backoff.next()) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }

    /// One connection's life: LISTEN, catch up, then follow notifications.
    async fn session(
        &self,
        bus: &dyn Bus,
        cursor: &mut Option<Cursor>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), BusError> {
        let pg = |e: tokio_postgres::Error| BusError::Broker(format!("postgres: {e}"));
        let url = self.config.url.as_deref().unwrap_or_default();
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
        let (tx, mut notifications) = mpsc::unbounded_channel();
        // The connection must be polled for anything to happen; it forwards
        // notifications (in order) and ends the session when it breaks.
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(Ok(n));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let _abort = AbortOnDrop(driver);
        // This session only saves the outbox position: a position lost in a
        // database crash means a few rows read again (and dropped by id), so
        // its commits need not wait for the disk, and neither does the next
        // read.
        client
            .batch_execute("SET synchronous_commit TO off")
            .await
            .map_err(pg)?;
        let mut listen: Vec<String> = self.config.channels.iter().map(|c| ident(c)).collect();
        if let Some(table) = &self.config.outbox_table {
            listen.push(ident(table));
        }
        for channel in &listen {
            client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .map_err(pg)?;
        }
        if self.config.outbox_table.is_some() {
            if cursor.is_none() {
                *cursor = Some(self.load_cursor(&client).await.map_err(pg)?);
            }
            self.catch_up(&client, bus, cursor, stop).await?;
        }
        self.health.up();
        backoff.reset();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_ms));
        loop {
            tokio::select! {
                n = notifications.recv() => match n {
                    Some(Ok(n)) if Some(n.channel()) == self.config.outbox_table.as_deref() => {
                        self.catch_up(&client, bus, cursor, stop).await?;
                    }
                    Some(Ok(n)) => {
                        let metrics = self.health.metrics();
                        match notification_event(n.channel(), n.payload()) {
                            Ok(event) => {
                                metrics.source_events.get_or_create(self.health.label()).inc();
                                self.publish(bus, vec![event], stop).await?;
                            }
                            Err(reason) => {
                                metrics.invalid.get_or_create(self.health.label()).inc();
                                tracing::warn!(source = "postgres", %reason, "notification dropped");
                            }
                        }
                    }
                    Some(Err(e)) => return Err(pg(e)),
                    None => return Err(BusError::Broker("postgres: connection closed".into())),
                },
                _ = tick.tick(), if self.config.outbox_table.is_some() => {
                    self.catch_up(&client, bus, cursor, stop).await?;
                }
                _ = stopped(stop) => return Ok(()),
            }
        }
    }

    /// Publishes, retrying while the bus refuses (its buffer is full), so a
    /// notification is not dropped for a broker outage. `Ok(true)` when the
    /// broker (or this process) has the events, `Ok(false)` when they only
    /// wait in this node's buffer.
    async fn publish(
        &self,
        bus: &dyn Bus,
        events: Vec<Event>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, BusError> {
        let mut backoff = Backoff::new();
        loop {
            match bus.publish(events.clone()).await {
                Ok(Published::Queued) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) => {
                    tracing::warn!(source = "postgres", error = %e, "bus refused events; retrying");
                    self.health.retry();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = stopped(stop) => return Err(e),
                    }
                }
            }
        }
    }

    async fn load_cursor(&self, client: &Client) -> Result<Cursor, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT xid::text, seq FROM fanwire_outbox_cursors WHERE name = $1",
                &[&self.config.cursor],
            )
            .await?;
        // A new cursor starts at the beginning: rows already in the table
        // were written for Fanwire and have not been delivered.
        Ok(match row {
            Some(row) => Cursor {
                xid: row.get(0),
                seq: row.get(1),
            },
            None => Cursor {
                xid: "0".into(),
                seq: 0,
            },
        })
    }

    /// Reads and publishes outbox rows until none is left.
    async fn catch_up(
        &self,
        client: &Client,
        bus: &dyn Bus,
        cursor: &mut Option<Cursor>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        let pg = |e: tokio_postgres::Error| BusError::Broker(format!("postgres: {e}"));
        let Some(table) = &self.config.outbox_table else {
            return Ok(());
        };
        let query = format!(
            "SELECT seq, xid::text, topic, data::text, id FROM {t} \
             WHERE (xid, seq) > ($1::text::xid8, $2) \
               AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid, seq LIMIT $3",
            t = ident(table)
        );
        let batch = self.config.batch as i64;
        loop {
            let Some(at) = cursor.clone() else {
                return Ok(());
            };
            let rows = client
                .query(&query, &[&at.xid, &at.seq, &batch])
                .await
                .map_err(pg)?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            let next = Cursor {
                seq: last.get(0),
                xid: last.get(1),
            };
            tracing::debug!(
                source = "postgres",
                cursor = %self.config.cursor,
                after = ?at,
                first = rows[0].get::<_, i64>(0),
                last = ?next,
                rows = rows.len(),
                "outbox rows read"
            );
            let full = rows.len() as i64 == batch;
            let metrics = self.health.metrics();
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.get(0);
                let topic: String = row.get(2);
                let data: String = row.get(3);
                let id: Option<String> = row.get(4);
                match serde_json::from_str(&data) {
                    Ok(data) if !topic.is_empty() => events.push(Event {
                        id: Some(id.unwrap_or_else(|| format!("{table}:{seq}"))),
                        ..Event::new(topic, data)
                    }),
                    _ => {
                        metrics.invalid.get_or_create(self.health.label()).inc();
                        tracing::warn!(
                            source = "postgres",
                            table,
                            seq,
                            "outbox row dropped: empty topic"
                        );
                    }
                }
            }
            metrics
                .source_events
                .get_or_create(self.health.label())
                .inc_by(events.len() as u64);
            let durable = events.is_empty() || self.publish(bus, events, stop).await?;
            *cursor = Some(next.clone());
            // Saved only once the broker has the events: a crash before
            // then re-reads them, and their ids make the repeat harmless.
            if durable {
                client
                    .execute(
                        "INSERT INTO fanwire_outbox_cursors (name, xid, seq) \
                         VALUES ($1, $2::text::xid8, $3) \
                         ON CONFLICT (name) DO UPDATE SET xid = excluded.xid, seq = excluded.seq",
                        &[&self.config.cursor, &next.xid, &next.seq],
                    )
                    .await
                    .map_err(pg)?;
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Aborts a task when dropped (the connection driver of a session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notifications_become_events() {
        let e =
            notification_event("ch", r#"{"topic":"orders:5","data":{"id":1},"id":"x"}"#).unwrap();
        assert_eq!((e.topic.as_str(), e.id.as_deref()), ("orders:5", Some("x")));
        // Other JSON is the data of an event on the channel's topic.
        let e = notification_event("ch", r#"{"topic":"t","data":1,"extra":2}"#).unwrap();
        assert_eq!(e.topic, "ch");
        assert_eq!(e.data, json!({"topic":"t","data":1,"extra":2}));
        assert_eq!(notification_event("ch", "[1]").unwrap().data, json!([1]));
        assert!(notification_event("ch", "not json").is_err());
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
    }
}
