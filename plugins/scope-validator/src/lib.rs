//! Security module 3, the scope validator: at subscribe time, a `userId`
//! variable or argument, when present, must equal the subscriber's subject,
//! and a `tenantId` one the subscriber's tenant; otherwise the subscribe
//! fails with a `FORBIDDEN` GraphQL error.
//!
//! Config: `user_keys` (default `["userId"]`) and `tenant_keys` (default
//! `["tenantId"]`) name the variables and arguments to check.

use fanwire_sdk::{host, id_text, GraphQLError, Subscription, SubscriptionPolicy, Value};

fn keys(name: &str, default: &'static str) -> Vec<String> {
    match host::config().get(name).and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        None => vec![default.to_owned()],
    }
}

/// Every value given for `key`, as a variable or as an argument of the field.
fn given<'a>(s: &'a Subscription, key: &str) -> impl Iterator<Item = &'a Value> {
    [s.variables.field(key), s.arguments.field(key)]
        .into_iter()
        .flatten()
        .filter(|v| !v.is_null())
}

fn check_scope(
    s: &Subscription,
    keys: &[String],
    own: Option<&str>,
    what: &str,
) -> Result<(), GraphQLError> {
    for key in keys {
        for value in given(s, key) {
            if id_text(value).as_deref() != own || own.is_none() {
                return Err(GraphQLError::forbidden(format!(
                    "Variable `{key}` must be the subscriber's own {what}"
                )));
            }
        }
    }
    Ok(())
}

struct ScopeValidator;

impl SubscriptionPolicy for ScopeValidator {
    fn check(s: &Subscription) -> Result<(), GraphQLError> {
        let p = &s.principal;
        check_scope(
            s,
            &keys("user_keys", "userId"),
            p.subject.as_deref(),
            "user id",
        )?;
        check_scope(
            s,
            &keys("tenant_keys", "tenantId"),
            p.tenant.as_deref(),
            "tenant id",
        )
    }
}

fanwire_sdk::export_subscription_policy!(ScopeValidator);
