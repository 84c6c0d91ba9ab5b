//! The socket-free parts of the `floor` stand-in server: request heads,
//! the WebSocket handshake answer, the client messages it understands, and
//! the `next` frames it writes.
//!
//! `floor` does only what a subscription server cannot avoid: it parses a
//! publish body, builds each event's frame once and writes it to every
//! subscriber. Its latency is the cost of the writes themselves.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use serde_json::value::RawValue;

/// The parts of an HTTP/1.1 request head `floor` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, e.g. `/publish`.
    pub path: String,
    /// The body's length (0 without `Content-Length`).
    pub content_length: usize,
    /// `Sec-WebSocket-Key`, for an upgrade.
    pub websocket_key: Option<String>,
    /// Whether the client asked to close after the response.
    pub close: bool,
    /// Bytes taken by the head, blank line included.
    pub len: usize,
}

/// Parses a request head; `Ok(None)` while it is incomplete.
pub fn parse_request_head(buf: &[u8]) -> anyhow::Result<Option<RequestHead>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(anyhow!("bad request line: {request_line:?}"));
    };
    let mut head = RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: 0,
        websocket_key: None,
        close: version == "HTTP/1.0",
        len: end + 4,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().context("bad Content-Length")?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

/// The `101` answer to a WebSocket upgrade with key `key`, choosing
/// graphql-transport-ws (the only subprotocol `floor` speaks).
pub fn upgrade_response(key: &str) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
}

/// A complete HTTP/1.1 response with a JSON body.
pub fn json_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A client message, as far as `floor` cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `connection_init`: answered with `connection_ack`.
    Init,
    /// `subscribe`: the subscription's id and its `topic` variable.
    Subscribe {
        /// The operation id, echoed in every `next`.
        id: String,
        /// `variables.topic` (the load generator always sets it).
        topic: String,
    },
    /// `ping`: answered with `pong`.
    Ping,
    /// Anything else (`pong`, `complete`, ...): ignored.
    Other,
}

/// Reads one client text message.
pub fn parse_client_message(text: &str) -> anyhow::Result<ClientMessage> {
    let v: serde_json::Value = serde_json::from_str(text).context("client message")?;
    Ok(match v["type"].as_str() {
        Some("connection_init") => ClientMessage::Init,
        Some("ping") => ClientMessage::Ping,
        Some("subscribe") => ClientMessage::Subscribe {
            id: v["id"]
                .as_str()
                .ok_or_else(|| anyhow!("subscribe without an id"))?
                .to_owned(),
            topic: v["payload"]["variables"]["topic"]
                .as_str()
                .ok_or_else(|| anyhow!("subscribe without variables.topic"))?
                .to_owned(),
        },
        _ => ClientMessage::Other,
    })
}

/// One published event: fanwire's body format, `data` kept as raw JSON.
#[derive(Debug)]
pub struct Event<'a> {
    /// The topic it goes to.
    pub topic: String,
    /// The event's data, never parsed further.
    pub data: &'a RawValue,
}

type Fields<'a> = HashMap<&'a str, &'a RawValue>;

fn event<'a>(mut fields: Fields<'a>) -> anyhow::Result<Event<'a>> {
    let topic: &RawValue = fields
        .remove("topic")
        .ok_or_else(|| anyhow!("an event without a topic"))?;
    Ok(Event {
        topic: serde_json::from_str(topic.get()).context("topic")?,
        data: fields
            .remove("data")
            .ok_or_else(|| anyhow!("an event without data"))?,
    })
}

/// Parses a `POST /publish` body: one event or an array of them.
pub fn parse_events(body: &[u8]) -> anyhow::Result<Vec<Event<'_>>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let all: Vec<Fields<'_>> = serde_json::from_slice(body).context("publish body")?;
        all.into_iter().map(event).collect()
    } else {
        event(serde_json::from_slice(body).context("publish body")?).map(|e| vec![e])
    }
}

/// What follows `{"id":"<id>` in an event's `next` frame; built once per
/// event, whatever the subscribers' ids.
pub fn next_tail(data: &RawValue) -> Vec<u8> {
    let mut tail = Vec::with_capacity(data.get().len() + 48);
    tail.extend_from_slice(br#"","type":"next","payload":{"data":{"tick":"#);
    tail.extend_from_slice(data.get().as_bytes());
    tail.extend_from_slice(b"}}}");
    tail
}

/// Appends the unmasked text frames of a batch of events for subscription
/// `id` to `out`: the WebSocket header and `{"id":"<id>` per event, then the
/// event's shared `tail`. (`id` is the client's, echoed as given: the load
/// generator's ids need no escaping.)
pub fn push_next_frames(out: &mut Vec<u8>, id: &str, tails: &[Vec<u8>]) {
    for tail in tails {
        let len = br#"{"id":""#.len() + id.len() + tail.len();
        out.push(0x81);
        match len {
            0..=125 => out.push(len as u8),
            126..=65535 => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(br#"{"id":""#);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{classify, Incoming};
    use crate::workload::write_event;

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_request_head(b"POST /publish HTTP/1.1\r\nHost").unwrap(),
            None
        );
        let head = parse_request_head(
            b"POST /publish HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n{\"topic\":1}",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("POST", "/publish")
        );
        assert_eq!((head.content_length, head.close, head.len), (12, false, 55));
        let upgrade = parse_request_head(
            b"GET /graphql HTTP/1.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let key = upgrade.websocket_key.unwrap();
        // RFC 6455's example key and accept value.
        assert!(upgrade_response(&key)
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(parse_request_head(b"nonsense\r\n\r\n").is_err());
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            parse_client_message(r#"{"type":"connection_init","payload":{}}"#).unwrap(),
            ClientMessage::Init
        );
        let subscribe = crate::workload::subscribe_message("7", "bench", 0, 1);
        assert_eq!(
            parse_client_message(&subscribe).unwrap(),
            ClientMessage::Subscribe {
                id: "7".into(),
                topic: "bench".into()
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"pong"}"#).unwrap(),
            ClientMessage::Other
        );
        assert!(parse_client_message(r#"{"type":"subscribe","payload":{}}"#).is_err());
    }

    #[test]
    fn frames_carry_the_published_data_as_the_load_generator_reads_it() {
        let mut body = String::from("[");
        write_event(&mut body, "bench", 3, 1_700_000_000_000_001, "xx", None);
        body.push(',');
        write_event(
            &mut body,
            "bench",
            4,
            1_700_000_000_000_002,
            &"x".repeat(300),
            None,
        );
        body.push(']');
        let events = parse_events(body.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].topic, "bench");
        let tails: Vec<_> = events.iter().map(|e| next_tail(e.data)).collect();
        let mut out = Vec::new();
        push_next_frames(&mut out, "1", &tails);
        // Two unmasked text frames: a 7-bit length, then a 16-bit one.
        assert_eq!(out[0], 0x81);
        let first_len = out[1] as usize;
        let first = &out[2..2 + first_len];
        let v: serde_json::Value = serde_json::from_slice(first).unwrap();
        assert_eq!(v["id"], "1");
        assert_eq!(v["type"], "next");
        assert_eq!(v["payload"]["data"]["tick"]["seq"], 3);
        assert_eq!(
            classify(first),
            Incoming::Tick {
                seq: 3,
                ts_us: 1_700_000_000_000_001.0
            }
        );
        let rest = &out[2 + first_len..];
        assert_eq!((rest[0], rest[1]), (0x81, 126));
        let second_len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        assert_eq!(rest.len(), 4 + second_len);
        assert!(matches!(
            classify(&rest[4..]),
            Incoming::Tick { seq: 4, .. }
        ));
        let one = parse_events(b" {\"topic\":\"t\",\"data\":{\"seq\":1}}").unwrap();
        assert_eq!(one[0].data.get(), r#"{"seq":1}"#);
        assert!(parse_events(b"{\"data\":1}").is_err());
    }
}
