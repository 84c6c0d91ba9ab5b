//! NATS JetStream as the broker log: one stream bound to one subject, a
//! file-backed stream so it survives a broker restart, the stream sequence
//! as the event's sequence number, and `Nats-Msg-Id` so JetStream itself
//! drops a publish retried after a lost acknowledgement.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use fanwire_core::Event;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Mutex;

use crate::broker::{decode, encode, Bounds, Entry, Log};
use crate::config::BusConfig;
use crate::BusError;

/// A JetStream stream as a [`Log`].
pub(crate) struct NatsLog {
    client: async_nats::Client,
    js: jetstream::Context,
    config: stream::Config,
    // tokio mutexes: held across the requests that create them.
    stream: Mutex<Option<stream::Stream>>,
    reader: Mutex<Option<Reader>>,
}

/// An ordered consumer positioned at `next`.
struct Reader {
    next: u64,
    messages: consumer::pull::Ordered,
}

fn broker(e: impl std::fmt::Display) -> BusError {
    BusError::Broker(format!("nats: {e}"))
}

impl NatsLog {
    /// A client that connects in the background and reconnects forever.
    pub(crate) async fn connect(config: &BusConfig) -> Result<NatsLog, BusError> {
        let url = config.url();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(3)))
            // The default waits up to several seconds between attempts;
            // recover from a broker restart within about a second.
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(50 * 2u64.saturating_pow(attempt.min(5) as u32))
            })
            .connect(url.as_str())
            .await
            .map_err(|e| BusError::Config(format!("bus URL {url:?}: {e}")))?;
        let js = jetstream::new(client.clone());
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            max_messages: i64::try_from(config.history).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        };
        Ok(NatsLog {
            client,
            js,
            config: stream_config,
            stream: Mutex::new(None),
            reader: Mutex::new(None),
        })
    }

    /// The stream, created on first use with this node's settings (an
    /// existing stream keeps its own).
    async fn stream(&self) -> Result<stream::Stream, BusError> {
        let mut slot = self.stream.lock().await;
        if let Some(stream) = &*slot {
            return Ok(stream.clone());
        }
        let stream = self
            .js
            .get_or_create_stream(self.config.clone())
            .await
            .map_err(broker)?;
        *slot = Some(stream.clone());
        Ok(stream)
    }
}

impl Log for NatsLog {
    async fn append(&self, events: &[Event]) -> Result<u64, BusError> {
        let mut acks = Vec::with_capacity(events.len());
        // Send every message, then wait for the acknowledgements, so a
        // batch costs one round trip.
        for event in events {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = &event.id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let ack = self
                .js
                .publish_with_headers(
                    self.config.subjects[0].clone(),
                    headers,
                    encode(event).into(),
                )
                .await
                .map_err(broker)?;
            acks.push(ack);
        }
        let mut last = 0;
        for ack in acks {
            last = last.max(ack.await.map_err(broker)?.sequence);
        }
        Ok(last)
    }

    async fn bounds(&self) -> Result<Bounds, BusError> {
        let mut stream = self.stream().await?;
        let state = stream.info().await.map_err(broker)?.state.clone();
        Ok(Bounds {
            first: (state.messages > 0).then_some(state.first_sequence),
            last: state.last_sequence,
        })
    }

    async fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, BusError> {
        let mut slot = self.reader.lock().await;
        if slot.as_ref().is_none_or(|r| r.next != after + 1) {
            *slot = None;
            let deliver_policy = match after {
                0 => consumer::DeliverPolicy::All,
                _ => consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
            };
            let consumer = self
                .stream()
                .await?
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(broker)?;
            let messages = consumer.messages().await.map_err(broker)?;
            *slot = Some(Reader {
                next: after + 1,
                messages,
            });
        }
        let Some(reader) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let first = match tokio::time::timeout(Duration::from_secs(1), reader.messages.next()).await
        {
            Err(_) => return Ok(out),
            Ok(next) => next,
        };
        let mut next = Some(first);
        while let Some(item) = next {
            let message = match item {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    *slot = None;
                    return if out.is_empty() {
                        Err(broker(e))
                    } else {
                        Ok(out)
                    };
                }
                None => {
                    *slot = None;
                    return Err(broker("the consumer ended"));
                }
            };
            let seq = message.info().map_err(broker)?.stream_sequence;
            reader.next = seq + 1;
            out.push(Entry {
                seq,
                // Stream sequences count every message ever stored.
                count: Some(seq),
                event: decode(&message.payload),
            });
            if out.len() >= max {
                break;
            }
            // Take what has already arrived without waiting again.
            next = reader.messages.next().now_or_never();
        }
        Ok(out)
    }

    async fn check(&self, after: u64) -> Result<Option<u64>, BusError> {
        let bounds = self.bounds().await?;
        let first = bounds.first.unwrap_or(bounds.last + 1);
        Ok((first > after + 1).then(|| first - 1))
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    // A read gives up after a second even when the ordered consumer is only
    // slow (e.g. being recreated after a reconnect).
    const EMPTY_READ_IS_END: bool = false;
}
