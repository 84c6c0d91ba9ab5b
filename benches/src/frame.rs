//! Reading a server frame without a JSON parser.
//!
//! At a million frames a second the client must cost less than the server
//! it measures, so it looks only for the envelope's `"type"` and the tick's
//! `"seq"` and `"ts"`. Both servers write the envelope's `type` before the
//! payload and the tick's fields in selection order (`seq ts pad`); the
//! tick is searched after `"data":`, so a `seq` in the result's
//! `extensions` (fanwire's resume position) is never mistaken for it, and
//! the padding is never scanned.

/// A server frame, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incoming<'a> {
    /// A `next` result carrying a tick.
    Tick {
        /// The tick's sequence number (negative for warm-up ticks).
        seq: i64,
        /// When it was published, in wall-clock microseconds.
        ts_us: f64,
    },
    /// `connection_ack`.
    Ack,
    /// A protocol `ping`, to be answered with `pong`.
    Ping,
    /// Any other message type (`error`, `complete`, `pong`, ...).
    Other(&'a str),
    /// Not a message this client understands.
    Malformed,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p + needle.len())
}

fn number_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .map_or(bytes.len(), |p| start + p)
}

fn number<T: std::str::FromStr>(bytes: &[u8], start: usize) -> Option<(T, usize)> {
    let end = number_end(bytes, start);
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    Some((text.parse().ok()?, end))
}

/// Classifies one text frame.
pub fn classify(frame: &[u8]) -> Incoming<'_> {
    let Some(start) = find(frame, br#""type":""#, 0) else {
        return Incoming::Malformed;
    };
    let Some(len) = frame[start..].iter().position(|&b| b == b'"') else {
        return Incoming::Malformed;
    };
    let kind = &frame[start..start + len];
    match kind {
        b"next" => {
            let tick = find(frame, br#""data":"#, start).and_then(|data| {
                let at = find(frame, br#""seq":"#, data)?;
                let (seq, end) = number::<i64>(frame, at)?;
                let at = find(frame, br#""ts":"#, end)?;
                let (ts_us, _) = number::<f64>(frame, at)?;
                Some(Incoming::Tick { seq, ts_us })
            });
            tick.unwrap_or(Incoming::Malformed)
        }
        b"connection_ack" => Incoming::Ack,
        b"ping" => Incoming::Ping,
        _ => std::str::from_utf8(kind).map_or(Incoming::Malformed, Incoming::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ticks_from_both_servers_output() {
        let fanwire = br#"{"id":"1","type":"next","payload":{"data":{"tick":{"seq":42,"ts":1700000000000123,"pad":"xx"}},"extensions":{"seq":5}}}"#;
        assert_eq!(
            classify(fanwire),
            Incoming::Tick {
                seq: 42,
                ts_us: 1_700_000_000_000_123.0
            }
        );
        let aliased = br#"{"id":"1","type":"next","payload":{"extensions":{"seq":99},"data":{"t3":{"seq":-7,"ts":1.7e15,"pad":""}}}}"#;
        assert_eq!(
            classify(aliased),
            Incoming::Tick {
                seq: -7,
                ts_us: 1.7e15
            }
        );
    }

    #[test]
    fn control_messages_and_garbage() {
        assert_eq!(classify(br#"{"type":"connection_ack"}"#), Incoming::Ack);
        assert_eq!(classify(br#"{"type":"ping"}"#), Incoming::Ping);
        assert_eq!(
            classify(br#"{"id":"1","type":"error","payload":[]}"#),
            Incoming::Other("error")
        );
        assert_eq!(classify(b"{}"), Incoming::Malformed);
        assert_eq!(
            classify(br#"{"id":"1","type":"next","payload":{"data":null}}"#),
            Incoming::Malformed
        );
    }
}
