//! WASM `subscription-policy` and `connection-policy` plugins as the core's
//! [`SubscriptionPolicy`] and [`ConnectionPolicy`].

use std::sync::Arc;

use fanwire_core::error::codes;
use fanwire_core::hooks::{
    Accepted, ConnectionPolicy, ConnectionRequest, GroupInfo, SubscriptionPolicy,
};
use fanwire_core::GraphQLError;

use crate::bindings::v0_1::types;
use crate::config::PluginSpec;
use crate::convert;
use crate::guest;
use crate::metrics::{Answer, Function};
use crate::plugin::{Bindings, Plugin};

/// A subscription policy backed by a plugin, for the subscriptions in its scope.
#[derive(Debug)]
pub struct WasmSubscriptionPolicy {
    plugin: Arc<Plugin>,
    spec: PluginSpec,
}

impl WasmSubscriptionPolicy {
    /// Wraps a plugin loaded as a `subscription-policy`.
    pub fn new(plugin: Arc<Plugin>, spec: PluginSpec) -> Self {
        WasmSubscriptionPolicy { plugin, spec }
    }
}

impl SubscriptionPolicy for WasmSubscriptionPolicy {
    fn check(&self, group: &GroupInfo) -> Result<(), GraphQLError> {
        if !self.spec.applies_to(&group.field, &group.topic) {
            return Ok(());
        }
        let sub = convert::subscription(group);
        // Every version shares the `types` records: the same call each way.
        let answer = self
            .plugin
            .call(Function::Check, |slot| match &slot.bindings {
                Bindings::Subscription01(b) => b
                    .fanwire_plugin_subscription()
                    .call_check(&mut slot.store, &sub),
                Bindings::Subscription02(b) => b
                    .fanwire_plugin_subscription()
                    .call_check(&mut slot.store, &sub),
                Bindings::Subscription03(b) => b
                    .fanwire_plugin_subscription()
                    .call_check(&mut slot.store, &sub),
                Bindings::Subscription04(b) => b
                    .fanwire_plugin_subscription()
                    .call_check(&mut slot.store, &sub),
                _ => unreachable!("a subscription policy is loaded with its world"),
            });
        let m = &self.plugin.metrics;
        match answer {
            Ok(Ok(())) => {
                m.decision(Answer::Accept, 1);
                Ok(())
            }
            Ok(Err(e)) => {
                m.decision(Answer::Reject, 1);
                let code = e.code.as_deref().unwrap_or(codes::FORBIDDEN);
                Err(GraphQLError::new(e.message, code))
            }
            Err(fault) => {
                m.decision(Answer::Reject, 1);
                Err(GraphQLError::new(
                    format!(
                        "Subscription refused: policy {} failed ({})",
                        self.plugin.name(),
                        fault.label()
                    ),
                    codes::FORBIDDEN,
                ))
            }
        }
    }
}

/// A connection policy backed by a plugin.
#[derive(Debug)]
pub struct WasmConnectionPolicy {
    plugin: Arc<Plugin>,
}

impl WasmConnectionPolicy {
    /// Wraps a plugin loaded as a `connection-policy`.
    pub fn new(plugin: Arc<Plugin>) -> Self {
        WasmConnectionPolicy { plugin }
    }
}

impl ConnectionPolicy for WasmConnectionPolicy {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        let init_payload =
            serde_json::to_string(request.init_payload).unwrap_or_else(|_| "{}".into());
        let headers: Vec<types::Header> = request
            .headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        // The `request` and `accepted` records are declared in each
        // version's own `connection` interface: one Rust type per version.
        macro_rules! check {
            ($wit:path, $b:expr, $store:expr) => {{
                use $wit as w;
                let request = w::Request {
                    init_payload: init_payload.clone(),
                    headers: headers.clone(),
                };
                $b.fanwire_plugin_connection()
                    .call_check($store, &request)
                    .map(|r| r.map(|a| (a.principal, a.ack)))
            }};
        }
        let answer = self
            .plugin
            .call(Function::Check, |slot| match &slot.bindings {
                Bindings::Connection01(b) => check!(
                    crate::bindings::v0_1::connection::exports::fanwire::plugin::connection,
                    b,
                    &mut slot.store
                ),
                Bindings::Connection02(b) => check!(
                    crate::bindings::v0_2::connection::exports::fanwire::plugin::connection,
                    b,
                    &mut slot.store
                ),
                Bindings::Connection03(b) => check!(
                    crate::bindings::v0_3::connection::exports::fanwire::plugin::connection,
                    b,
                    &mut slot.store
                ),
                Bindings::Connection04(b) => check!(
                    crate::bindings::v0_4::connection::exports::fanwire::plugin::connection,
                    b,
                    &mut slot.store
                ),
                _ => unreachable!("a connection policy is loaded with its world"),
            });
        let m = &self.plugin.metrics;
        match answer {
            Ok(Ok((principal, ack))) => {
                m.decision(Answer::Accept, 1);
                Ok(Accepted {
                    principal: convert::principal_from(principal),
                    ack: guest::ack(ack.as_deref()),
                })
            }
            Ok(Err(reason)) => {
                m.decision(Answer::Reject, 1);
                Err(reason)
            }
            Err(fault) => {
                m.decision(Answer::Reject, 1);
                Err(format!(
                    "connection policy {} failed ({})",
                    self.plugin.name(),
                    fault.label()
                ))
            }
        }
    }
}
