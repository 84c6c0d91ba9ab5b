//! Events as they arrive from publishers and buses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event: its topic and the value of the subscription field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The topic, e.g. `orders:5`.
    pub topic: String,
    /// The subscription field's value for this event.
    pub data: Value,
    /// An optional id, used to suppress duplicates across buses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Position in the topic's history, increasing per topic; assigned by the
    /// bus that keeps the history (or by the engine's own window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl Event {
    /// An event with no id and no sequence number.
    pub fn new(topic: impl Into<String>, data: Value) -> Self {
        Event {
            topic: topic.into(),
            data,
            id: None,
            seq: None,
        }
    }
}
