//! Redis Streams as the broker log: one stream key, appended by a Lua
//! script that numbers entries itself (`<seq>-0` ids) so sequence numbers
//! are plain integers that stay below 2^53 (JavaScript clients read them
//! exactly) and keep increasing across a Redis restart that lost the data:
//! `seq = max(last + 1, now in microseconds)`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fanwire_core::Event;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Mutex;

use crate::broker::{decode, encode, Bounds, Entry, Log};
use crate::config::BusConfig;
use crate::BusError;

/// KEYS[1] = stream, ARGV[1] = MAXLEN, ARGV[2..] = encoded events.
/// Returns the last sequence number written. Each entry holds the event
/// (`e`) and the count of entries the stream has received (`n`, one more
/// than the newest entry's), by which readers notice trimmed entries.
const APPEND: &str = r#"
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = 0
local n = 0
if top[1] then
  last = tonumber(string.match(top[1][1], '^(%d+)'))
  local fields = top[1][2]
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'n' then n = tonumber(fields[j + 1]) end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 2, #ARGV do
  last = math.max(last + 1, now)
  n = n + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%.0f', last) .. '-0',
    'e', ARGV[i], 'n', string.format('%.0f', n))
end
return string.format('%.0f', last)
"#;

/// How long a blocking read waits for new entries.
const BLOCK_MS: u64 = 1_000;

/// A Redis stream as a [`Log`].
pub(crate) struct RedisLog {
    client: redis::Client,
    key: String,
    history: u64,
    script: redis::Script,
    // Separate connections: the reader blocks in XREAD, which would stall
    // every other command on a multiplexed connection.
    writer: Mutex<Option<MultiplexedConnection>>,
    reader: Mutex<Option<MultiplexedConnection>>,
    connected: AtomicBool,
}

fn broker(e: impl std::fmt::Display) -> BusError {
    BusError::Broker(format!("redis: {e}"))
}

/// The sequence number of an entry id `<seq>-<n>`.
fn seq_of(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

impl RedisLog {
    /// A client; connections are made on first use and after failures.
    pub(crate) fn connect(config: &BusConfig) -> Result<RedisLog, BusError> {
        let url = config.url();
        let client = redis::Client::open(url.as_str())
            .map_err(|e| BusError::Config(format!("bus URL {url:?}: {e}")))?;
        Ok(RedisLog {
            client,
            key: config.stream.clone(),
            history: config.history,
            script: redis::Script::new(APPEND),
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            connected: AtomicBool::new(false),
        })
    }

    /// Runs `f` on a connection from `slot`, connecting first if needed and
    /// dropping the connection when a command fails.
    async fn with<T>(
        &self,
        slot: &Mutex<Option<MultiplexedConnection>>,
        response_timeout: Duration,
        f: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, BusError> {
        let mut slot = slot.lock().await;
        if slot.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(response_timeout));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| {
                    self.connected.store(false, Ordering::Relaxed);
                    broker(e)
                })?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(broker("no connection"));
        };
        match f(conn).await {
            Ok(v) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                *slot = None;
                self.connected.store(false, Ordering::Relaxed);
                Err(broker(e))
            }
        }
    }

    async fn first(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<Option<u64>> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(reply.ids.first().and_then(|e| seq_of(&e.id)))
    }

    async fn now_micros(conn: &mut MultiplexedConnection) -> redis::RedisResult<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
        Ok(secs * 1_000_000 + micros)
    }
}

impl Log for RedisLog {
    async fn append(&self, events: &[Event]) -> Result<u64, BusError> {
        let mut invocation = self.script.key(&self.key);
        invocation.arg(self.history);
        for event in events {
            invocation.arg(encode(event));
        }
        let last = self
            .with(&self.writer, Duration::from_secs(3), async |conn| {
                invocation.invoke_async::<String>(conn).await
            })
            .await?;
        last.parse()
            .map_err(|_| broker(format!("the append script returned {last:?}")))
    }

    async fn bounds(&self) -> Result<Bounds, BusError> {
        self.with(&self.writer, Duration::from_secs(3), async |conn| {
            let first = self.first(conn).await?;
            let top: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&self.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            // An empty stream: nothing written from now on can be at or
            // below the current time.
            let last = match top.ids.first().and_then(|e| seq_of(&e.id)) {
                Some(last) => last,
                None => Self::now_micros(conn).await?,
            };
            Ok(Bounds { first, last })
        })
        .await
    }

    async fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, BusError> {
        let timeout = Duration::from_millis(BLOCK_MS * 3);
        let reply: Option<StreamReadReply> = self
            .with(&self.reader, timeout, async |conn| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(max)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&self.key)
                    .arg(format!("{after}-0"))
                    .query_async(conn)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let Some(seq) = seq_of(&entry.id) else {
                    continue;
                };
                let field = |name: &str| match entry.map.get(name) {
                    Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
                    _ => None,
                };
                out.push(Entry {
                    seq,
                    count: field("n")
                        .and_then(|n| std::str::from_utf8(n).ok())
                        .and_then(|n| n.parse().ok()),
                    event: field("e").and_then(decode),
                });
            }
        }
        Ok(out)
    }

    async fn check(&self, after: u64) -> Result<Option<u64>, BusError> {
        self.with(&self.writer, Duration::from_secs(3), async |conn| {
            let at: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(format!("{after}-0"))
                .arg(format!("{after}-0"))
                .query_async(conn)
                .await?;
            if after == 0 || !at.ids.is_empty() {
                return Ok(None);
            }
            // Our last entry is gone: trimmed while we were away, or Redis
            // restarted without persistence.
            Ok(match self.first(conn).await? {
                Some(first) if first <= after => None,
                Some(first) => Some(first - 1),
                None => Some(Self::now_micros(conn).await?),
            })
        })
        .await
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    // XREAD answers nil only when nothing follows `after`.
    const EMPTY_READ_IS_END: bool = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_sequence_numbers() {
        assert_eq!(seq_of("1795000000000123-0"), Some(1_795_000_000_000_123));
        assert_eq!(seq_of("bad"), None);
    }
}
