//! A WASM `field-resolver` plugin (0.3 and later) as the core's
//! [`Resolver`]: called once per group per event, synchronously, on the
//! dispatching thread, so each group's results keep the events' order. The
//! event's data crosses as text rendered once per event for every group
//! whose data no filter changed. Whatever goes wrong (a trap, the deadline,
//! the memory cap, text that is not JSON, the guest's own error) becomes a
//! GraphQL error for that group alone: its field is `null`, the error
//! carries the field's path and `extensions.code` (the guest's, else
//! `RESOLVER_FAILED`); a failure of the call itself also says how in
//! `extensions.reason` (`trap`, `timeout`, `memory`, `instantiate`,
//! `not_json`), as a Python resolver's failures do.

use std::sync::Arc;

use fanwire_core::error::codes;
use fanwire_core::hooks::{DataText, GroupInfo, Resolution, Resolver};
use fanwire_core::{Event, GraphQLError};
use serde_json::Value;
use wasmtime::component::{ComponentType, Func, Lower, TypedFunc};
use wasmtime::Store;

use crate::bindings::v0_1::types;
use crate::bindings::v0_3::resolver::FieldResolver;
use crate::convert;
use crate::host::HostState;
use crate::metrics::{Answer, FaultKind, Function};
use crate::plugin::{Bindings, Plugin};

/// `types.event`, borrowed from the core's event.
#[derive(ComponentType, Lower)]
#[component(record)]
struct EventArg<'a> {
    topic: &'a str,
    data: &'a str,
    id: Option<&'a str>,
    seq: Option<u64>,
}

/// `types.principal`, borrowed from the group's.
#[derive(ComponentType, Lower)]
#[component(record)]
struct PrincipalArg<'a> {
    subject: Option<&'a str>,
    tenant: Option<&'a str>,
    roles: &'a [String],
    claims: &'a str,
    #[component(name = "expires-at")]
    expires_at: Option<u64>,
}

/// `resolver.field-call`, borrowed from the group's.
#[derive(ComponentType, Lower)]
#[component(record)]
struct FieldCallArg<'a> {
    field: &'a str,
    arguments: &'a str,
    variables: &'a str,
    principal: PrincipalArg<'a>,
}

type Params<'a> = (EventArg<'a>, FieldCallArg<'a>);
type Returned = (Result<String, types::GraphqlError>,);

/// An instance's `resolve`, typed with borrowed records: the event and the
/// group's call are lowered straight from the core's values, where the
/// records `bindgen!` generates would need a copy of every string per call
/// (its borrowing mode does not compile for this world in wasmtime 48).
#[derive(Clone, Copy)]
pub(crate) struct ResolveFunc(Func);

impl ResolveFunc {
    /// Takes `resolve` from a new instance's bindings, type-checked against
    /// the borrowed records.
    pub(crate) fn check(
        bindings: &FieldResolver,
        store: &Store<HostState>,
    ) -> wasmtime::Result<ResolveFunc> {
        let func = *bindings.fanwire_plugin_resolver().func_resolve().func();
        func.typed::<Params<'static>, Returned>(store)?;
        Ok(ResolveFunc(func))
    }

    fn typed<'a>(self) -> TypedFunc<Params<'a>, Returned> {
        // SAFETY: `check` type-checked this function against these types; a
        // lifetime is not part of a component type.
        unsafe { TypedFunc::new_unchecked(self.0) }
    }
}

/// A field resolver backed by a plugin, bound to one `Subscription` field.
#[derive(Debug)]
pub struct WasmResolver {
    plugin: Arc<Plugin>,
    field: String,
}

impl WasmResolver {
    /// Wraps a plugin loaded as a `field-resolver` for `field`.
    pub fn new(plugin: Arc<Plugin>, field: impl Into<String>) -> Self {
        WasmResolver {
            plugin,
            field: field.into(),
        }
    }

    /// The plugin version in use.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The field it computes.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// One `resolve` call with the event's data as `data` (JSON text).
    fn call(&self, event: &Event, data: &str, group: &GroupInfo) -> Result<Value, GraphQLError> {
        let (arguments, variables) = (
            convert::json(&group.arguments),
            convert::json(&group.variables),
        );
        let principal = &group.principal;
        let claims = convert::json(&principal.claims);
        let params = (
            EventArg {
                topic: &event.topic,
                data,
                id: event.id.as_deref(),
                seq: event.seq,
            },
            FieldCallArg {
                field: &group.field,
                arguments: &arguments,
                variables: &variables,
                principal: PrincipalArg {
                    subject: principal.subject.as_deref(),
                    tenant: principal.tenant.as_deref(),
                    roles: &principal.roles,
                    claims: &claims,
                    expires_at: principal.expires_at,
                },
            },
        );
        let answer = self
            .plugin
            .call(Function::Resolve, |slot| match &slot.bindings {
                Bindings::Resolver03(resolve) => {
                    let (answer,) = resolve.typed().call(&mut slot.store, params)?;
                    Ok(answer)
                }
                _ => unreachable!("a field resolver is loaded with the field-resolver world"),
            });
        let m = &self.plugin.metrics;
        match answer {
            Ok(Ok(text)) => match serde_json::from_str(&text) {
                Ok(value) => {
                    m.decision(Answer::Value, 1);
                    Ok(value)
                }
                Err(e) => {
                    m.decision(Answer::NotJson, 1);
                    Err(failure(
                        format!(
                            "resolver {} of `{}` returned text that is not JSON ({e})",
                            self.plugin.name(),
                            self.field
                        ),
                        "not_json",
                    ))
                }
            },
            Ok(Err(error)) => {
                m.decision(Answer::Error, 1);
                let code = error.code.as_deref().unwrap_or(codes::RESOLVER_FAILED);
                Err(GraphQLError::new(error.message, code))
            }
            Err(fault) => {
                m.decision(Answer::Failed, 1);
                Err(failure(self.failed(fault), fault.label()))
            }
        }
    }

    /// What a client is told about a failed call (the log has the detail).
    fn failed(&self, fault: FaultKind) -> String {
        let (name, field) = (self.plugin.name(), &self.field);
        match fault {
            FaultKind::Trap => format!("resolver {name} of `{field}` failed (trap)"),
            FaultKind::Timeout => format!(
                "resolver {name} of `{field}` failed (timeout: it ran past its deadline of {} ms)",
                self.plugin.timeout_ms()
            ),
            FaultKind::Memory => format!(
                "resolver {name} of `{field}` failed (memory: it reached its cap of {} MiB)",
                self.plugin.memory_mb()
            ),
            FaultKind::Instantiate => {
                format!(
                    "resolver {name} of `{field}` failed (instantiate: no instance could start)"
                )
            }
        }
    }
}

/// A failed call as a field error with `extensions.reason`.
fn failure(message: String, reason: &str) -> GraphQLError {
    let mut error = GraphQLError::new(message, codes::RESOLVER_FAILED);
    error
        .extensions
        .insert("reason".into(), Value::String(reason.into()));
    error
}

impl Resolver for WasmResolver {
    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        Resolution::Ready(self.call(event, &convert::json(data), group))
    }

    fn resolve_shared(
        &self,
        event: &Event,
        data: &Value,
        text: Option<&DataText<'_>>,
        group: &GroupInfo,
    ) -> Resolution {
        let answer = match text {
            Some(text) => self.call(event, text.get(), group),
            None => self.call(event, &convert::json(data), group),
        };
        Resolution::Ready(answer)
    }
}
