//! Per-plugin metrics, registered in the engine's registry (all under
//! `fanwire_plugin_`), with handles resolved once per loaded plugin so a
//! call costs atomic increments and no label lookups.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    plugin: String,
    result: &'static str,
}

type HistogramFamily = Family<PluginLabel, Histogram, fn() -> Histogram>;

/// Every plugin metric, for all plugins.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    calls: Family<KindLabels, Counter>,
    decisions: Family<KindLabels, Counter>,
    faults: Family<KindLabels, Counter>,
    reloads: Family<KindLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    call_seconds: HistogramFamily,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn call_histogram() -> Histogram {
    // 1 us .. ~1.6 s: a trivial call is about a microsecond, a deadline tens of ms.
    Histogram::new(exponential_buckets(1e-6, 3.0, 14))
}

impl PluginMetrics {
    /// Unregistered metrics (see [`PluginMetrics::register`]).
    pub fn new() -> Self {
        PluginMetrics {
            calls: Family::default(),
            decisions: Family::default(),
            faults: Family::default(),
            reloads: Family::default(),
            cache: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram),
        }
    }

    /// Adds them to the engine's registry (once per engine).
    pub fn register(&self, metrics: &fanwire_core::metrics::Metrics) {
        metrics.register_extra(|r| {
            r.register(
                "plugin_calls",
                "Plugin calls, by plugin and function",
                self.calls.clone(),
            );
            r.register(
                "plugin_decisions",
                "Plugin answers by kind: allow, deny, redact, replace (filters), allow_all, deny_all, per_event (verdicts), accept, reject (policies), value, error, not_json, failed, prepared (resolvers)",
                self.decisions.clone(),
            );
            r.register(
                "plugin_faults",
                "Plugin calls that failed (trap, timeout, memory, instantiate), answered with a denial, or by a resolver with a null field and an error",
                self.faults.clone(),
            );
            r.register(
                "plugin_reloads",
                "Plugin versions loaded or rejected, by outcome",
                self.reloads.clone(),
            );
            r.register(
                "plugin_cache",
                "Plugin compile cache outcomes per load: hit, miss (compiled), corrupt (an entry refused and compiled again), write_error (not stored; the plugin still loads)",
                self.cache.clone(),
            );
            r.register(
                "plugin_call_seconds",
                "Duration of one plugin call",
                self.call_seconds.clone(),
            );
        });
    }

    /// Handles for one plugin.
    pub(crate) fn for_plugin(&self, plugin: &str) -> Handles {
        let labels = |kind| KindLabels {
            plugin: plugin.to_owned(),
            kind,
        };
        Handles {
            calls: Function::ALL.map(|f| self.calls.get_or_create_owned(&labels(f.label()))),
            decisions: Answer::ALL.map(|a| self.decisions.get_or_create_owned(&labels(a.label()))),
            call_seconds: self.call_seconds.get_or_create_owned(&PluginLabel {
                plugin: plugin.to_owned(),
            }),
            faults: [
                self.faults.get_or_create_owned(&labels("trap")),
                self.faults.get_or_create_owned(&labels("timeout")),
                self.faults.get_or_create_owned(&labels("memory")),
                self.faults.get_or_create_owned(&labels("instantiate")),
            ],
        }
    }

    /// Counts a load attempt (`loaded` or `rejected`).
    pub(crate) fn reload(&self, plugin: &str, outcome: &'static str) {
        self.reloads
            .get_or_create(&KindLabels {
                plugin: plugin.to_owned(),
                kind: outcome,
            })
            .inc();
    }

    /// Counts what the compile cache did for one load of `plugin`.
    pub(crate) fn cache(&self, plugin: &str, result: CacheResult) {
        self.cache
            .get_or_create(&CacheLabels {
                plugin: plugin.to_owned(),
                result: result.label(),
            })
            .inc();
    }

    /// How often the compile cache answered `result` for `plugin`, for
    /// tests and reports.
    pub fn cache_count(&self, plugin: &str, result: CacheResult) -> u64 {
        self.cache
            .get_or_create_owned(&CacheLabels {
                plugin: plugin.to_owned(),
                result: result.label(),
            })
            .get()
    }

    /// The value of a counter, for tests and reports: `metric` is one of
    /// `calls`, `decisions`, `faults`, `reloads`.
    pub fn count(&self, metric: &str, plugin: &str, kind: &'static str) -> u64 {
        let family = match metric {
            "calls" => &self.calls,
            "decisions" => &self.decisions,
            "faults" => &self.faults,
            _ => &self.reloads,
        };
        family
            .get_or_create_owned(&KindLabels {
                plugin: plugin.to_owned(),
                kind,
            })
            .get()
    }
}

/// What the compile cache did for one load: a `plugin_cache` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A verified entry was loaded: nothing compiled.
    Hit,
    /// No entry: compiled (and stored).
    Miss,
    /// An entry was refused (unreadable, truncated, altered, or for other
    /// bytes, another wasmtime or other engine settings): compiled again.
    Corrupt,
    /// The compiled component could not be stored; the plugin still loads.
    WriteError,
}

impl CacheResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Corrupt => "corrupt",
            CacheResult::WriteError => "write_error",
        }
    }
}

/// Why a plugin call produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The guest tried to grow its memory past the cap.
    Memory,
    /// No instance could be created for the call.
    Instantiate,
}

impl FaultKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Instantiate => "instantiate",
        }
    }
}

/// A function a plugin exports: a `calls` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Prepare,
    Decide,
    Check,
    Decode,
    Encode,
    Template,
    Resolve,
}

impl Function {
    const ALL: [Function; 7] = [
        Function::Prepare,
        Function::Decide,
        Function::Check,
        Function::Decode,
        Function::Encode,
        Function::Template,
        Function::Resolve,
    ];

    /// The metric label (and the export's name in logs).
    pub fn label(self) -> &'static str {
        match self {
            Function::Prepare => "prepare",
            Function::Decide => "decide",
            Function::Check => "check",
            Function::Decode => "decode",
            Function::Encode => "encode",
            Function::Template => "template",
            Function::Resolve => "resolve",
        }
    }
}

/// A plugin's answer: a `decisions` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Allow,
    Deny,
    Redact,
    Replace,
    AllowAll,
    DenyAll,
    PerEvent,
    Accept,
    Reject,
    /// A resolver's value.
    Value,
    /// A resolver's own error (`err(graphql-error)`).
    Error,
    /// A resolver's answer that is not JSON.
    NotJson,
    /// A resolver call that faulted (see `plugin_faults` for how).
    Failed,
    /// A resolver's context for a group (a 0.4 `prepare` that succeeded).
    Prepared,
}

impl Answer {
    const ALL: [Answer; 14] = [
        Answer::Allow,
        Answer::Deny,
        Answer::Redact,
        Answer::Replace,
        Answer::AllowAll,
        Answer::DenyAll,
        Answer::PerEvent,
        Answer::Accept,
        Answer::Reject,
        Answer::Value,
        Answer::Error,
        Answer::NotJson,
        Answer::Failed,
        Answer::Prepared,
    ];

    fn label(self) -> &'static str {
        match self {
            Answer::Allow => "allow",
            Answer::Deny => "deny",
            Answer::Redact => "redact",
            Answer::Replace => "replace",
            Answer::AllowAll => "allow_all",
            Answer::DenyAll => "deny_all",
            Answer::PerEvent => "per_event",
            Answer::Accept => "accept",
            Answer::Reject => "reject",
            Answer::Value => "value",
            Answer::Error => "error",
            Answer::NotJson => "not_json",
            Answer::Failed => "failed",
            Answer::Prepared => "prepared",
        }
    }
}

/// One plugin's resolved metric handles, indexed by [`Function`],
/// [`Answer`] and [`FaultKind`]: counting is an atomic increment.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub call_seconds: Histogram,
    faults: [Counter; 4],
    calls: [Counter; 7],
    decisions: [Counter; 14],
}

impl Handles {
    pub fn fault(&self, kind: FaultKind) {
        self.faults[kind as usize].inc();
    }

    pub fn call(&self, function: Function) {
        self.calls[function as usize].inc();
    }

    pub fn decision(&self, answer: Answer, n: u64) {
        self.decisions[answer as usize].inc_by(n);
    }
}
