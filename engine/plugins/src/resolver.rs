//! A WASM `field-resolver` plugin (0.3 and later) as the core's
//! [`Resolver`]: called once per group per event, synchronously, on the
//! dispatching thread, so each group's results keep the events' order. The
//! event's data crosses as text rendered once per event for every group
//! whose data no filter changed, and the answer comes back as text, checked
//! to be JSON and projected in place. A 0.4 plugin's `prepare` runs once per
//! group (the core keeps its context with the group) and `resolve` then
//! receives the event and that context; a 0.3 plugin receives the group's
//! whole field call with every event. Whatever goes wrong (a trap, the
//! deadline, the memory cap, text that is not JSON, the guest's own error,
//! in `prepare` or `resolve`) becomes a GraphQL error for that group alone:
//! its field is `null`, the error carries the field's path and
//! `extensions.code` (the guest's, else `RESOLVER_FAILED`); a failure of
//! the call itself also says how in `extensions.reason` (`trap`,
//! `timeout`, `memory`, `instantiate`, `not_json`), as a Python resolver's
//! failures do.

use std::sync::Arc;

use fanwire_core::error::codes;
use fanwire_core::hooks::{DataText, GroupContext, GroupInfo, Resolution, Resolver};
use fanwire_core::json::JsonText;
use fanwire_core::{Event, GraphQLError};
use serde_json::Value;
use wasmtime::component::{ComponentNamedList, ComponentType, Func, Lift, Lower, TypedFunc};
use wasmtime::Store;

use crate::bindings::v0_1::types;
use crate::bindings::{v0_3, v0_4};
use crate::convert;
use crate::host::HostState;
use crate::metrics::{Answer, FaultKind, Function};
use crate::plugin::{Bindings, Plugin, Version};

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
/// 0.4's `resolve`: the event and the group's context, 11 flat values, so
/// wasmtime passes them in registers, without a parameter area to allocate
/// in the guest (0.3's, with the whole call, has more than 16).
type Params04<'a> = (EventArg<'a>, &'a str);
type Prepare04<'a> = (FieldCallArg<'a>,);

/// A function taken from a new instance, type-checked once against
/// borrowed records: the event and the group's call are lowered straight
/// from the core's values, where the records `bindgen!` generates would
/// need a copy of every string per call (its borrowing mode does not
/// compile for this world in wasmtime 48).
#[derive(Clone, Copy)]
pub(crate) struct Checked(Func);

impl Checked {
    fn check<P, R>(func: Func, store: &Store<HostState>) -> wasmtime::Result<Checked>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        func.typed::<P, R>(store)?;
        Ok(Checked(func))
    }

    /// The function typed as `check` checked it, with any lifetime.
    ///
    /// # Safety
    /// `P` and `R` must be the types `check` was called with, up to
    /// lifetimes.
    unsafe fn typed<P, R>(self) -> TypedFunc<P, R>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        // SAFETY: the caller's promise; a lifetime is not part of a
        // component type.
        unsafe { TypedFunc::new_unchecked(self.0) }
    }
}

/// A 0.3 instance's `resolve`.
#[derive(Clone, Copy)]
pub(crate) struct ResolveFunc(Checked);

impl ResolveFunc {
    /// Takes `resolve` from a new instance's bindings, type-checked against
    /// the borrowed records.
    pub(crate) fn check(
        bindings: &v0_3::resolver::FieldResolver,
        store: &Store<HostState>,
    ) -> wasmtime::Result<ResolveFunc> {
        let func = *bindings.fanwire_plugin_resolver().func_resolve().func();
        Checked::check::<Params<'static>, Returned>(func, store).map(ResolveFunc)
    }

    fn typed<'a>(self) -> TypedFunc<Params<'a>, Returned> {
        // SAFETY: checked as `Params, Returned` in `check`.
        unsafe { self.0.typed() }
    }
}

/// A 0.4 instance's `prepare` and `resolve`.
#[derive(Clone, Copy)]
pub(crate) struct ResolverFuncs {
    prepare: Checked,
    resolve: Checked,
}

impl ResolverFuncs {
    /// Takes `prepare` and `resolve` from a new instance's bindings,
    /// type-checked against the borrowed records.
    pub(crate) fn check(
        bindings: &v0_4::resolver::FieldResolver,
        store: &Store<HostState>,
    ) -> wasmtime::Result<ResolverFuncs> {
        let exports = bindings.fanwire_plugin_resolver();
        Ok(ResolverFuncs {
            prepare: Checked::check::<Prepare04<'static>, Returned>(
                *exports.func_prepare().func(),
                store,
            )?,
            resolve: Checked::check::<Params04<'static>, Returned>(
                *exports.func_resolve().func(),
                store,
            )?,
        })
    }

    fn prepare<'a>(self) -> TypedFunc<Prepare04<'a>, Returned> {
        // SAFETY: checked as `Prepare04, Returned` in `check`.
        unsafe { self.prepare.typed() }
    }

    fn resolve<'a>(self) -> TypedFunc<Params04<'a>, Returned> {
        // SAFETY: checked as `Params04, Returned` in `check`.
        unsafe { self.resolve.typed() }
    }
}

/// The group's field call, rendered (arguments, variables and claims as
/// JSON text) and lent to `f` as the borrowed record.
fn with_call<R>(group: &GroupInfo, f: impl FnOnce(FieldCallArg<'_>) -> R) -> R {
    let (arguments, variables) = (
        convert::json(&group.arguments),
        convert::json(&group.variables),
    );
    let principal = &group.principal;
    let claims = convert::json(&principal.claims);
    f(FieldCallArg {
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
    })
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

    /// One `resolve` call with the event's data as `data` (JSON text) and
    /// the group's context (a 0.4 plugin's) or field call (0.3).
    fn call(
        &self,
        event: &Event,
        data: &str,
        group: &GroupInfo,
        context: Option<&str>,
    ) -> Resolution {
        let event = EventArg {
            topic: &event.topic,
            data,
            id: event.id.as_deref(),
            seq: event.seq,
        };
        let answer = match self.plugin.version() {
            Version::V0_4 => {
                let params = (event, context.unwrap_or_default());
                self.plugin
                    .call(Function::Resolve, |slot| match &slot.bindings {
                        Bindings::Resolver04(funcs) => {
                            let (answer,) = funcs.resolve().call(&mut slot.store, params)?;
                            Ok(answer)
                        }
                        _ => unreachable!("a 0.4 resolver is loaded with its world"),
                    })
            }
            _ => with_call(group, |call| {
                let params = (event, call);
                self.plugin
                    .call(Function::Resolve, |slot| match &slot.bindings {
                        Bindings::Resolver03(resolve) => {
                            let (answer,) = resolve.typed().call(&mut slot.store, params)?;
                            Ok(answer)
                        }
                        _ => unreachable!("a 0.3 resolver is loaded with its world"),
                    })
            }),
        };
        let m = &self.plugin.metrics;
        let error = match answer {
            // Checked here, projected from the text by the core.
            Ok(Ok(text)) => match JsonText::parse(text) {
                Ok(text) => {
                    m.decision(Answer::Value, 1);
                    return Resolution::Json(text);
                }
                Err(e) => {
                    m.decision(Answer::NotJson, 1);
                    failure(
                        format!(
                            "resolver {} of `{}` returned text that is not JSON ({e})",
                            self.plugin.name(),
                            self.field
                        ),
                        "not_json",
                    )
                }
            },
            Ok(Err(error)) => self.guest_error(error),
            Err(fault) => {
                m.decision(Answer::Failed, 1);
                failure(self.failed("", fault), fault.label())
            }
        };
        Resolution::Ready(Err(error))
    }

    /// The guest's own error, counted, with its code or `RESOLVER_FAILED`.
    fn guest_error(&self, error: types::GraphqlError) -> GraphQLError {
        self.plugin.metrics.decision(Answer::Error, 1);
        let code = error.code.as_deref().unwrap_or(codes::RESOLVER_FAILED);
        GraphQLError::new(error.message, code)
    }

    /// What a client is told about a failed call (the log has the detail);
    /// `phase` is `""` for `resolve`, `" in prepare"` for `prepare`.
    fn failed(&self, phase: &str, fault: FaultKind) -> String {
        let (name, field) = (self.plugin.name(), &self.field);
        match fault {
            FaultKind::Trap => format!("resolver {name} of `{field}` failed{phase} (trap)"),
            FaultKind::Timeout => format!(
                "resolver {name} of `{field}` failed{phase} (timeout: it ran past its deadline of {} ms)",
                self.plugin.timeout_ms()
            ),
            FaultKind::Memory => format!(
                "resolver {name} of `{field}` failed{phase} (memory: it reached its cap of {} MiB)",
                self.plugin.memory_mb()
            ),
            FaultKind::Instantiate => {
                format!(
                    "resolver {name} of `{field}` failed{phase} (instantiate: no instance could start)"
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
    /// A 0.4 plugin's `prepare`: the context its `resolve` calls receive.
    /// A 0.3 plugin has none (it receives the whole call with each event).
    fn prepare(&self, group: &GroupInfo) -> Result<GroupContext, GraphQLError> {
        if self.plugin.version() < Version::V0_4 {
            return Ok(None);
        }
        let answer = with_call(group, |call| {
            self.plugin
                .call(Function::Prepare, |slot| match &slot.bindings {
                    Bindings::Resolver04(funcs) => {
                        let (answer,) = funcs.prepare().call(&mut slot.store, (call,))?;
                        Ok(answer)
                    }
                    _ => unreachable!("a 0.4 resolver is loaded with its world"),
                })
        });
        match answer {
            Ok(Ok(context)) => {
                self.plugin.metrics.decision(Answer::Prepared, 1);
                Ok(Some(Arc::from(context)))
            }
            Ok(Err(error)) => Err(self.guest_error(error)),
            Err(fault) => {
                self.plugin.metrics.decision(Answer::Failed, 1);
                Err(failure(self.failed(" in prepare", fault), fault.label()))
            }
        }
    }

    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        // Only reached by a caller that skips `resolve_shared` (and so the
        // context): prepare here, once for this call.
        let context = match self.prepare(group) {
            Ok(context) => context,
            Err(error) => return Resolution::Ready(Err(error)),
        };
        self.call(event, &convert::json(data), group, context.as_deref())
    }

    fn resolve_shared(
        &self,
        event: &Event,
        data: &Value,
        text: Option<&DataText<'_>>,
        group: &GroupInfo,
        context: Option<&str>,
    ) -> Resolution {
        match text {
            Some(text) => self.call(event, text.get(), group, context),
            None => self.call(event, &convert::json(data), group, context),
        }
    }
}
