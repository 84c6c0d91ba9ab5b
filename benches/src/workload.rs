//! What the load generator sends: `subscribe` messages and tick events,
//! both shaped by `benches/schema.graphql`.

use serde_json::json;

/// The `subscribe` message for client `client`, which uses selection
/// variant `client % distinct`.
///
/// Variant 0 is the plain selection; variant `k > 0` aliases the root field
/// `t{k}`, which projects to different bytes and so lands in its own group
/// on a server that groups identical subscriptions.
pub fn subscribe_message(id: &str, topic: &str, client: usize, distinct: usize) -> String {
    let variant = client % distinct.max(1);
    let alias = if variant == 0 {
        String::new()
    } else {
        format!("t{variant}: ")
    };
    let query = format!(
        "subscription Ticks($topic: String!) {{ {alias}tick(topic: $topic) {{ seq ts pad }} }}"
    );
    json!({
        "id": id,
        "type": "subscribe",
        "payload": {
            "query": query,
            "operationName": "Ticks",
            "variables": { "topic": topic },
        },
    })
    .to_string()
}

/// The length of `pad` that makes a tick's `data` about `payload_bytes`
/// long when serialised (a tick without padding is ~45 bytes).
pub fn pad_for(payload_bytes: usize) -> String {
    const BARE: usize = r#"{"seq":1000,"ts":1700000000000000,"pad":""}"#.len();
    "x".repeat(payload_bytes.saturating_sub(BARE))
}

/// Appends one event object (`{"topic","data"}`) to `out`. With `owner`,
/// the data names its owner the way the security filters read it
/// (`user_id`, `tenant_id`, `federation_id` of [`Principal::of`]).
pub fn write_event(
    out: &mut String,
    topic: &str,
    seq: i64,
    ts_us: u64,
    pad: &str,
    owner: Option<&Principal>,
) {
    use std::fmt::Write;
    // `topic`, `pad` and the principal's names are ours: plain ASCII with
    // nothing to escape.
    let _ = write!(
        out,
        r#"{{"topic":"{topic}","data":{{"seq":{seq},"ts":{ts_us},"pad":"{pad}""#
    );
    if let Some(p) = owner {
        let _ = write!(
            out,
            r#","user_id":"{}","tenant_id":"{}","federation_id":"{}""#,
            p.subject, p.tenant, p.federation
        );
    }
    out.push_str("}}");
}

/// Who a client is when the load generator authenticates (`--jwt-secret`):
/// client `i` is principal `i % principals`, and tick `n` belongs to
/// principal `owner_of(n)`, so the security filters pass each tick to the
/// clients of exactly one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The JWT `sub`, and the ticks' `user_id`.
    pub subject: String,
    /// The `tenant_id` claim, and the ticks' `tenant_id`.
    pub tenant: String,
    /// The `federation_id` claim, and the ticks' `federation_id`.
    pub federation: String,
}

impl Principal {
    /// Principal number `index`.
    pub fn of(index: usize) -> Principal {
        Principal {
            subject: format!("user-{index}"),
            tenant: format!("tenant-{index}"),
            federation: format!("fed-{index}"),
        }
    }

    /// The JWT claims of this principal, valid for `ttl_s` seconds from
    /// `now_s` (Unix seconds), with the role the tick field needs.
    pub fn claims(&self, now_s: u64, ttl_s: u64) -> serde_json::Value {
        json!({
            "sub": self.subject,
            "tenant_id": self.tenant,
            "federation_id": self.federation,
            "roles": ["tick:read"],
            "iat": now_s,
            "exp": now_s + ttl_s,
        })
    }
}

/// The principal (of `principals`) tick `seq` belongs to: measured ticks
/// round-robin, warm-up tick `-1 - k` to `k % principals`.
pub fn owner_of(seq: i64, principals: usize) -> usize {
    let principals = principals.max(1) as u64;
    let n = if seq >= 0 {
        seq as u64
    } else {
        (-1 - seq) as u64
    };
    (n % principals) as usize
}

/// How many of the measured ticks `0..events` belong to principal `index`.
pub fn ticks_of(index: usize, events: u64, principals: usize) -> u64 {
    let principals = principals.max(1) as u64;
    let index = index as u64 % principals;
    events / principals + u64::from(index < events % principals)
}

/// Most loopback source addresses [`source_address`] hands out
/// (127.0.0.2 to 127.0.0.254).
pub const MAX_SOURCE_ADDRESSES: usize = 253;

/// The loopback address client `client` connects from when clients are
/// spread over `addresses` source addresses (127.0.0.2, 127.0.0.3, ...),
/// or `None` to let the kernel choose (127.0.0.1). One source address has
/// about 28,000 ephemeral ports towards one server port, so 100,000
/// clients need at least four.
pub fn source_address(client: usize, addresses: usize) -> Option<std::net::Ipv4Addr> {
    if addresses == 0 {
        return None;
    }
    let k = client % addresses.min(MAX_SOURCE_ADDRESSES);
    Some(std::net::Ipv4Addr::new(127, 0, 0, 2 + k as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_source_addresses() {
        use std::net::Ipv4Addr;
        assert_eq!(source_address(5, 0), None);
        assert_eq!(source_address(0, 16), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_address(17, 16), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            source_address(252, 1000),
            Some(Ipv4Addr::new(127, 0, 0, 254))
        );
        assert_eq!(source_address(253, 1000), Some(Ipv4Addr::new(127, 0, 0, 2)));
    }

    #[test]
    fn events_are_valid_json_of_about_the_requested_size() {
        let pad = pad_for(200);
        let mut body = String::new();
        write_event(&mut body, "bench", 1234, 1_700_000_000_000_000, &pad, None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["seq"], 1234);
        let data_len = v["data"].to_string().len();
        assert!((195..=205).contains(&data_len), "{data_len}");
    }

    #[test]
    fn owned_events_name_their_principal_as_the_filters_read_it() {
        let mut body = String::new();
        let p = Principal::of(owner_of(7, 3));
        write_event(&mut body, "bench", 7, 1, "", Some(&p));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["user_id"], "user-1");
        assert_eq!(v["data"]["tenant_id"], "tenant-1");
        assert_eq!(v["data"]["federation_id"], "fed-1");
        let claims = p.claims(100, 60);
        assert_eq!(claims["sub"], v["data"]["user_id"]);
        assert_eq!(claims["tenant_id"], v["data"]["tenant_id"]);
        assert_eq!(claims["exp"], 160);
    }

    #[test]
    fn ticks_are_spread_over_principals_and_counted_per_principal() {
        // Warm-up ticks -1, -2, -3 reach principals 0, 1, 2.
        let warm: Vec<usize> = (1..=3).map(|k| owner_of(-k, 3)).collect();
        assert_eq!(warm, [0, 1, 2]);
        let mut counts = [0u64; 3];
        for n in 0..10 {
            counts[owner_of(n, 3)] += 1;
        }
        assert_eq!(
            counts,
            [ticks_of(0, 10, 3), ticks_of(1, 10, 3), ticks_of(2, 10, 3)]
        );
        assert_eq!(counts, [4, 3, 3]);
        assert_eq!(ticks_of(5, 10, 1), 10);
    }

    #[test]
    fn variants_alias_the_root_field() {
        let plain = subscribe_message("1", "bench", 3, 1);
        assert!(plain.contains("{ tick(topic: $topic)"));
        let aliased = subscribe_message("1", "bench", 3, 2);
        assert!(aliased.contains("{ t1: tick(topic: $topic)"));
        let v: serde_json::Value = serde_json::from_str(&aliased).unwrap();
        assert_eq!(v["payload"]["variables"]["topic"], "bench");
    }
}
