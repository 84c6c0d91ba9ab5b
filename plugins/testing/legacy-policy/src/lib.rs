//! Test plugin: a subscription policy for `fanwire:plugin@0.1.0`, written
//! against the 0.1 bindings directly. It refuses subscriptions to the field
//! named by its config (`{"refuse": "orderCreated"}`) with the error code
//! `LEGACY_REFUSED`, and accepts the rest. The host must keep loading it
//! next to 0.2 plugins.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "subscription-policy" });

use exports::fanwire::plugin::subscription::Guest;
use fanwire::plugin::host;
use fanwire::plugin::types::{GraphqlError, Subscription};

struct Policy;

impl Guest for Policy {
    fn check(subscription: Subscription) -> Result<(), GraphqlError> {
        // The config is a JSON object; a substring test is enough for a test plugin.
        let refused = format!("\"refuse\":\"{}\"", subscription.field);
        if host::config().replace(' ', "").contains(&refused) {
            return Err(GraphqlError {
                message: format!("legacy policy (0.1): `{}` is refused", subscription.field),
                code: Some("LEGACY_REFUSED".into()),
            });
        }
        Ok(())
    }
}

export!(Policy);
