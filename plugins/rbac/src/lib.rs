//! Security module 4, role-based access: each selected field that the
//! configuration maps to a permission needs that permission, else the
//! subscribe fails with a `FORBIDDEN` GraphQL error naming the field.
//!
//! Config:
//! - `permissions`: field name or dotted path (from the root field) ->
//!   permission, e.g. `{ orders = "order:read", "orderCreated.customer" = "customer:read" }`;
//!   a field name matches that field wherever it is selected;
//! - `roles`: role -> the permissions it grants, e.g. `{ admin = ["order:read"] }`.
//!   A principal's role that is not in this table counts as a permission itself.

use fanwire_sdk::{host, GraphQLError, Principal, Subscription, SubscriptionPolicy, Value};

/// Whether `principal` holds `permission`, directly or through a role.
fn grants(principal: &Principal, permission: &str) -> bool {
    let roles = host::config().get("roles").and_then(Value::as_object);
    principal.roles.iter().any(|role| {
        role == permission
            || roles
                .and_then(|r| r.get(role))
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(permission)))
    })
}

/// The permission a selected path needs: by full path first, then by field name.
fn needed(path: &str) -> Option<&'static str> {
    let map = host::config().get("permissions")?.as_object()?;
    let name = path.rsplit('.').next().unwrap_or(path);
    map.get(path).or_else(|| map.get(name))?.as_str()
}

struct Rbac;

impl SubscriptionPolicy for Rbac {
    fn check(s: &Subscription) -> Result<(), GraphQLError> {
        for path in std::iter::once(&s.field).chain(&s.selected_paths) {
            if let Some(permission) = needed(path) {
                if !grants(&s.principal, permission) {
                    return Err(GraphQLError::forbidden(format!(
                        "Field `{path}` needs the permission `{permission}`"
                    )));
                }
            }
        }
        Ok(())
    }
}

fanwire_sdk::export_subscription_policy!(Rbac);
