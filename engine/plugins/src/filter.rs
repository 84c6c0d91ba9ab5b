//! A WASM `event-filter` plugin as the core's [`EventFilter`].

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use fanwire_core::hooks::{Decision, EventFilter, GroupInfo, Verdict};
use fanwire_core::Event;

use crate::bindings::v0_1::filter::exports::fanwire::plugin::filter as wit;
use crate::config::PluginSpec;
use crate::convert;
use crate::plugin::{Bindings, Plugin};

/// Which parts of an event's data the plugin has asked for, over all groups.
#[derive(Debug, Clone)]
enum Needs {
    /// Only these dotted paths.
    Paths(BTreeSet<String>),
    /// All of the data.
    All,
}

/// An event filter backed by a plugin, applied to the subscriptions in its scope.
#[derive(Debug)]
pub struct WasmFilter {
    plugin: Arc<Plugin>,
    spec: PluginSpec,
    // Grows as groups are prepared (a superset of what any group needs is
    // always correct); read once per event.
    needs: RwLock<(Needs, Arc<[String]>)>,
}

impl WasmFilter {
    /// Wraps a plugin loaded as an `event-filter`.
    pub fn new(plugin: Arc<Plugin>, spec: PluginSpec) -> Self {
        WasmFilter {
            plugin,
            spec,
            needs: RwLock::new((Needs::Paths(BTreeSet::new()), Arc::from(Vec::new()))),
        }
    }

    /// The plugin version in use.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn need(&self, paths: Option<Vec<String>>) {
        let mut needs = self.needs.write().unwrap_or_else(|p| p.into_inner());
        match (&mut needs.0, paths) {
            (Needs::All, _) => {}
            (n, None) => *n = Needs::All,
            (Needs::Paths(set), Some(paths)) => {
                if paths.iter().all(|p| set.contains(p)) {
                    return;
                }
                set.extend(paths);
                needs.1 = set.iter().cloned().collect();
            }
        }
    }

    fn call_decide(
        &self,
        event: &fanwire_core::Event,
        groups: &[&GroupInfo],
    ) -> Result<Vec<wit::Decision>, String> {
        let wit_event = {
            let needs = self.needs.read().unwrap_or_else(|p| p.into_inner());
            match &needs.0 {
                Needs::All => convert::event(event, None),
                Needs::Paths(_) => convert::event(event, Some(&needs.1)),
            }
        };
        let subs: Vec<_> = groups.iter().map(|g| convert::subscription(g)).collect();
        self.plugin
            .call("decide", |slot| match &slot.bindings {
                Bindings::Filter(b) => {
                    b.fanwire_plugin_filter()
                        .call_decide(&mut slot.store, &wit_event, &subs)
                }
                _ => unreachable!("a filter plugin is loaded with the event-filter world"),
            })
            .map_err(|fault| {
                format!(
                    "filter plugin {} failed ({})",
                    self.plugin.name(),
                    fault.label()
                )
            })
    }
}

impl EventFilter for WasmFilter {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn prepare(&self, group: &GroupInfo) -> Verdict {
        if !self.spec.applies_to(&group.field, &group.topic) {
            return Verdict::AllowAll;
        }
        let sub = convert::subscription(group);
        let verdict = self.plugin.call("prepare", |slot| match &slot.bindings {
            Bindings::Filter(b) => b
                .fanwire_plugin_filter()
                .call_prepare(&mut slot.store, &sub),
            _ => unreachable!("a filter plugin is loaded with the event-filter world"),
        });
        let m = &self.plugin.metrics;
        match verdict {
            Ok(wit::Verdict::AllowAll) => {
                m.decision("allow_all", 1);
                Verdict::AllowAll
            }
            Ok(wit::Verdict::DenyAll(reason)) => {
                m.decision("deny_all", 1);
                Verdict::DenyAll(reason)
            }
            Ok(wit::Verdict::PerEvent(paths)) => {
                m.decision("per_event", 1);
                self.need(paths);
                Verdict::PerEvent
            }
            // A failed prepare is not a reason to end subscriptions: each
            // event is then asked about, and denied while the plugin fails.
            Err(_) => {
                self.need(None);
                Verdict::PerEvent
            }
        }
    }

    fn decide(&self, event: &Event, groups: &[&GroupInfo]) -> Vec<Decision> {
        let m = &self.plugin.metrics;
        let denied = |reason: String| {
            m.decision("deny", groups.len() as u64);
            vec![Decision::Deny(reason); groups.len()]
        };
        let decisions = match self.call_decide(event, groups) {
            Ok(d) if d.len() == groups.len() => d,
            Ok(d) => {
                return denied(format!(
                    "filter plugin {} answered {} decisions for {} groups",
                    self.plugin.name(),
                    d.len(),
                    groups.len()
                ))
            }
            Err(reason) => return denied(reason),
        };
        decisions
            .into_iter()
            .map(|d| match d {
                wit::Decision::Allow => {
                    m.decision("allow", 1);
                    Decision::Allow
                }
                wit::Decision::Deny(reason) => {
                    m.decision("deny", 1);
                    Decision::Deny(reason)
                }
                wit::Decision::Redact(paths) => {
                    m.decision("redact", 1);
                    Decision::Redact(paths)
                }
                wit::Decision::Replace(text) => match serde_json::from_str(&text) {
                    Ok(value) => {
                        m.decision("replace", 1);
                        Decision::Replace(value)
                    }
                    Err(e) => {
                        m.decision("deny", 1);
                        Decision::Deny(format!("replacement is not JSON: {e}"))
                    }
                },
            })
            .collect()
    }
}
