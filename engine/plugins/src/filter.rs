//! A WASM `event-filter` plugin as the core's [`EventFilter`], for every
//! interface version: a 0.2, 0.3 or 0.4 plugin's per-group contexts live in the
//! core's verdicts and each distinct one crosses once per event; a 0.1
//! plugin gets whole groups.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use fanwire_core::hooks::{Asked, Decision, EventFilter, GroupInfo, Verdict};
use fanwire_core::Event;

use crate::bindings::v0_1::filter::exports::fanwire::plugin::filter as wit01;
use crate::bindings::v0_1::types;
use crate::bindings::v0_2::filter::exports::fanwire::plugin::filter as wit02;
use crate::bindings::v0_3::filter::exports::fanwire::plugin::filter as wit03;
use crate::bindings::v0_4::filter::exports::fanwire::plugin::filter as wit04;
use crate::config::PluginSpec;
use crate::convert;
use crate::guest::{self, Shape};
use crate::metrics::{Answer, FaultKind, Function};
use crate::plugin::{Bindings, Plugin, Version};

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
    needs: RwLock<(Needs, Shape)>,
}

impl WasmFilter {
    /// Wraps a plugin loaded as an `event-filter`.
    pub fn new(plugin: Arc<Plugin>, spec: PluginSpec) -> Self {
        WasmFilter {
            plugin,
            spec,
            needs: RwLock::new((Needs::Paths(BTreeSet::new()), Shape::default())),
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
                needs.1 = Shape::of(set.iter());
            }
        }
    }

    fn wit_event(&self, event: &Event) -> types::Event {
        let needs = self.needs.read().unwrap_or_else(|p| p.into_inner());
        match &needs.0 {
            Needs::All => convert::event(event, None),
            Needs::Paths(_) => convert::event(event, Some(&needs.1)),
        }
    }

    fn failed(&self, fault: FaultKind) -> String {
        format!(
            "filter plugin {} failed ({})",
            self.plugin.name(),
            fault.label()
        )
    }

    /// 0.1: every group crosses as a whole `subscription` record.
    fn decide_v0_1(&self, event: &Event, groups: &[Asked<'_>]) -> Result<Vec<Decision>, String> {
        let wit_event = self.wit_event(event);
        let subs: Vec<_> = groups
            .iter()
            .map(|g| convert::subscription(g.group))
            .collect();
        let decisions = self
            .plugin
            .call(Function::Decide, |slot| match &slot.bindings {
                Bindings::Filter01(b) => {
                    b.fanwire_plugin_filter()
                        .call_decide(&mut slot.store, &wit_event, &subs)
                }
                _ => unreachable!("a 0.1 filter plugin is loaded with the 0.1 event-filter world"),
            })
            .map_err(|f| self.failed(f))?;
        Ok(decisions
            .into_iter()
            .map(|d| self.decision_v0_1(d))
            .collect())
    }

    /// 0.2 and later: each distinct context crosses once; its decision goes
    /// to every group that has it.
    fn decide_v0_2(&self, event: &Event, groups: &[Asked<'_>]) -> Result<Vec<Decision>, String> {
        // One group with its context (S1, and any topic of one principal):
        // no deduplication to do.
        if let [Asked {
            context: Some(context),
            ..
        }] = groups
        {
            return self.call_decide(event, &[(*context).to_owned()]);
        }
        let mut contexts: Vec<String> = Vec::new();
        let mut slots: Vec<Slot> = Vec::with_capacity(groups.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for g in groups {
            let Some(context) = g.context else {
                // `prepare` failed for this group when it formed: ask again
                // (once per event, only while it fails).
                slots.push(match self.prepare(g.group) {
                    Verdict::PerEvent(Some(late)) => {
                        contexts.push(late.to_string());
                        Slot::Shared(contexts.len() - 1)
                    }
                    Verdict::AllowAll => Slot::Now(Decision::Allow),
                    Verdict::DenyAll(reason) => Slot::Now(Decision::Deny(reason)),
                    Verdict::PerEvent(None) => Slot::Now(Decision::Deny(format!(
                        "filter plugin {} cannot prepare this subscription",
                        self.plugin.name()
                    ))),
                });
                continue;
            };
            let index = if groups.len() <= LINEAR_DEDUP {
                contexts.iter().position(|c| c == context)
            } else {
                seen.get(context).copied()
            };
            let index = index.unwrap_or_else(|| {
                contexts.push(context.to_owned());
                if groups.len() > LINEAR_DEDUP {
                    seen.insert(context, contexts.len() - 1);
                }
                contexts.len() - 1
            });
            slots.push(Slot::Shared(index));
        }
        let decided = if contexts.is_empty() {
            Vec::new()
        } else {
            self.call_decide(event, &contexts)?
        };
        Ok(slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Shared(i) => decided[i].clone(),
                Slot::Now(d) => d,
            })
            .collect())
    }

    /// One `decide` call for the distinct `contexts`: a decision for each.
    fn call_decide(&self, event: &Event, contexts: &[String]) -> Result<Vec<Decision>, String> {
        let wit_event = self.wit_event(event);
        let decisions = self
            .plugin
            .call(Function::Decide, |slot| match &slot.bindings {
                Bindings::Filter02(b) => {
                    b.fanwire_plugin_filter()
                        .call_decide(&mut slot.store, &wit_event, contexts)
                }
                Bindings::Filter03(b) => b
                    .fanwire_plugin_filter()
                    .call_decide(&mut slot.store, &wit_event, contexts)
                    .map(|d| d.into_iter().map(decision_v0_3).collect()),
                Bindings::Filter04(b) => b
                    .fanwire_plugin_filter()
                    .call_decide(&mut slot.store, &wit_event, contexts)
                    .map(|d| d.into_iter().map(decision_v0_4).collect()),
                _ => {
                    unreachable!("a 0.2+ filter plugin is loaded with its event-filter world")
                }
            })
            .map_err(|f| self.failed(f))?;
        if decisions.len() != contexts.len() {
            return Err(format!(
                "filter plugin {} answered {} decisions for {} contexts",
                self.plugin.name(),
                decisions.len(),
                contexts.len()
            ));
        }
        Ok(decisions.into_iter().map(|d| self.decision(d)).collect())
    }

    fn decision_v0_1(&self, d: wit01::Decision) -> Decision {
        self.decision(match d {
            wit01::Decision::Allow => wit02::Decision::Allow,
            wit01::Decision::Deny(r) => wit02::Decision::Deny(r),
            wit01::Decision::Redact(p) => wit02::Decision::Redact(p),
            wit01::Decision::Replace(j) => wit02::Decision::Replace(j),
        })
    }

    /// The core's decision (both versions' decisions have one shape).
    fn decision(&self, d: wit02::Decision) -> Decision {
        match d {
            wit02::Decision::Allow => Decision::Allow,
            wit02::Decision::Deny(reason) => Decision::Deny(reason),
            wit02::Decision::Redact(paths) => Decision::Redact(paths),
            wit02::Decision::Replace(text) => guest::replacement(&text),
        }
    }

    fn verdict(&self, paths: Option<Vec<String>>, context: Option<Arc<str>>) -> Verdict {
        self.plugin.metrics.decision(Answer::PerEvent, 1);
        self.need(paths);
        Verdict::PerEvent(context)
    }
}

/// The conversions of a later version's verdicts and decisions to 0.2's
/// (the `filter` interface has not changed since 0.2, but each version's
/// records are Rust types of their own).
macro_rules! as_v0_2 {
    ($verdict:ident, $decision:ident, $w:ident) => {
        fn $verdict(v: $w::Verdict) -> wit02::Verdict {
            match v {
                $w::Verdict::AllowAll => wit02::Verdict::AllowAll,
                $w::Verdict::DenyAll(r) => wit02::Verdict::DenyAll(r),
                $w::Verdict::PerEvent(p) => wit02::Verdict::PerEvent(wit02::PerEvent {
                    fields: p.fields,
                    context: p.context,
                }),
            }
        }

        fn $decision(d: $w::Decision) -> wit02::Decision {
            match d {
                $w::Decision::Allow => wit02::Decision::Allow,
                $w::Decision::Deny(r) => wit02::Decision::Deny(r),
                $w::Decision::Redact(p) => wit02::Decision::Redact(p),
                $w::Decision::Replace(j) => wit02::Decision::Replace(j),
            }
        }
    };
}

as_v0_2!(verdict_v0_3, decision_v0_3, wit03);
as_v0_2!(verdict_v0_4, decision_v0_4, wit04);

/// Where a group's decision comes from.
enum Slot {
    /// The decision for the context at this index.
    Shared(usize),
    /// Decided apart (its `prepare` had failed).
    Now(Decision),
}

/// Up to this many groups, contexts are deduplicated by a linear scan
/// (cheaper than hashing for the few groups a topic usually has).
const LINEAR_DEDUP: usize = 16;

impl EventFilter for WasmFilter {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn prepare(&self, group: &GroupInfo) -> Verdict {
        if !self.spec.applies_to(&group.field, &group.topic) {
            return Verdict::AllowAll;
        }
        let sub = convert::subscription(group);
        let m = &self.plugin.metrics;
        let verdict = self
            .plugin
            .call(Function::Prepare, |slot| match &slot.bindings {
                Bindings::Filter01(b) => b
                    .fanwire_plugin_filter()
                    .call_prepare(&mut slot.store, &sub)
                    .map(|v| match v {
                        wit01::Verdict::AllowAll => wit02::Verdict::AllowAll,
                        wit01::Verdict::DenyAll(r) => wit02::Verdict::DenyAll(r),
                        // 0.1 has no contexts: its `decide` gets whole groups.
                        wit01::Verdict::PerEvent(fields) => {
                            wit02::Verdict::PerEvent(wit02::PerEvent {
                                fields,
                                context: String::new(),
                            })
                        }
                    }),
                Bindings::Filter02(b) => b
                    .fanwire_plugin_filter()
                    .call_prepare(&mut slot.store, &sub),
                Bindings::Filter03(b) => b
                    .fanwire_plugin_filter()
                    .call_prepare(&mut slot.store, &sub)
                    .map(verdict_v0_3),
                Bindings::Filter04(b) => b
                    .fanwire_plugin_filter()
                    .call_prepare(&mut slot.store, &sub)
                    .map(verdict_v0_4),
                _ => unreachable!("a filter plugin is loaded with the event-filter world"),
            });
        match verdict {
            Ok(wit02::Verdict::AllowAll) => {
                m.decision(Answer::AllowAll, 1);
                Verdict::AllowAll
            }
            Ok(wit02::Verdict::DenyAll(reason)) => {
                m.decision(Answer::DenyAll, 1);
                Verdict::DenyAll(reason)
            }
            Ok(wit02::Verdict::PerEvent(p)) => {
                let context = match self.plugin.version() {
                    Version::V0_1 => None,
                    Version::V0_2 | Version::V0_3 | Version::V0_4 => Some(Arc::from(p.context)),
                };
                self.verdict(p.fields, context)
            }
            // A failed prepare is not a reason to end subscriptions: each
            // event is then asked about (0.2 prepares the group again), and
            // denied while the plugin fails.
            Err(_) => {
                self.need(None);
                Verdict::PerEvent(None)
            }
        }
    }

    fn decide(&self, event: &Event, groups: &[Asked<'_>]) -> Vec<Decision> {
        let decided = match self.plugin.version() {
            Version::V0_1 => self.decide_v0_1(event, groups),
            Version::V0_2 | Version::V0_3 | Version::V0_4 => self.decide_v0_2(event, groups),
        };
        match decided {
            Ok(d) if d.len() == groups.len() => {
                // Counted per group, whether or not groups shared a context.
                let m = &self.plugin.metrics;
                for decision in &d {
                    m.decision(
                        match decision {
                            Decision::Allow => Answer::Allow,
                            Decision::Deny(_) => Answer::Deny,
                            Decision::Redact(_) => Answer::Redact,
                            Decision::Replace(_) => Answer::Replace,
                        },
                        1,
                    );
                }
                d
            }
            Ok(d) => {
                let reason = format!(
                    "filter plugin {} answered {} decisions for {} groups",
                    self.plugin.name(),
                    d.len(),
                    groups.len()
                );
                self.deny_all(groups.len(), reason)
            }
            Err(reason) => self.deny_all(groups.len(), reason),
        }
    }
}

impl WasmFilter {
    fn deny_all(&self, groups: usize, reason: String) -> Vec<Decision> {
        self.plugin.metrics.decision(Answer::Deny, groups as u64);
        vec![Decision::Deny(reason); groups]
    }
}
