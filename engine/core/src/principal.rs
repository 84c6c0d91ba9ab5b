//! Who is on the other end of a connection, as a connection policy established it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The verified identity of a connection. Anonymous connections get the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Principal {
    /// The user (JWT `sub`).
    pub subject: Option<String>,
    /// The tenant the user belongs to.
    pub tenant: Option<String>,
    /// Roles or permissions, e.g. `order:read`.
    pub roles: Vec<String>,
    /// Every verified claim, for filters that need more.
    pub claims: Map<String, Value>,
    /// When the credentials expire (Unix seconds); the connection closes then.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// A stable text equal for principals that no filter can tell apart:
    /// subscriptions are grouped only with others of the same principal.
    pub fn fingerprint(&self) -> String {
        let mut roles = self.roles.clone();
        roles.sort_unstable();
        // Serialising strings and JSON values cannot fail.
        serde_json::to_string(&(&self.subject, &self.tenant, roles, &self.claims))
            .unwrap_or_default()
    }
}
