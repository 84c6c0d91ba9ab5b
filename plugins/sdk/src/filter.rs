//! Event filters: a verdict per subscription group, with the context its
//! events are decided by, then a decision per event for each distinct
//! context.

use crate::{Decision, Event, Subscription, Verdict};

/// An event filter. The host calls [`EventFilter::prepare`] once per group;
/// a group answered with [`Verdict::per_event`] keeps the context given
/// there ([`Verdict::with_context`]), and [`EventFilter::decide`] is called
/// once per event for each distinct context among such groups. All of an
/// event's contexts travel in one call, so the data is parsed once per
/// event, and groups that share a context share a decision.
pub trait EventFilter {
    /// Looks at a group once, when it forms. The default decides every
    /// event with all of its data and the same (empty) context for every
    /// group: one decision per event.
    fn prepare(group: &Subscription) -> Verdict {
        let _ = group;
        Verdict::per_event_all()
    }

    /// Decides about one event for every group whose context is `context`.
    fn decide(event: &Event, context: &str) -> Decision;
}

/// Exports a type implementing [`EventFilter`] as the plugin's filter.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            struct __FanwireFilter;
            impl $crate::wit::exports::fanwire::plugin::filter::Guest for __FanwireFilter {
                fn prepare(
                    group: $crate::wit::types::Subscription,
                ) -> $crate::wit::exports::fanwire::plugin::filter::Verdict {
                    $crate::filter::__prepare::<$ty>(group)
                }
                fn decide(
                    event: $crate::wit::types::Event,
                    contexts: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::vec::Vec<$crate::wit::exports::fanwire::plugin::filter::Decision>
                {
                    $crate::filter::__decide::<$ty>(event, contexts)
                }
            }
    $crate::wit::__export_world!(__FanwireFilter with_types_in $crate::wit);
        };
    };
}

/// A filter that is one function of the event: `fn decide(event: &Event) ->
/// Decision`, the same decision for every subscriber, so one decision per
/// event. For decisions that depend on the subscriber, implement
/// [`EventFilter`] (its `prepare` gives each group a context) and use
/// [`export_filter!`].
#[macro_export]
macro_rules! filter {
    ($(#[$meta:meta])* fn $name:ident($event:ident: &$ety:ty) -> $dty:ty $body:block) => {
        $(#[$meta])*
        fn $name($event: &$ety) -> $dty $body
        struct __FanwireOneFunctionFilter;
        impl $crate::EventFilter for __FanwireOneFunctionFilter {
            fn decide(event: &$crate::Event, _context: &str) -> $crate::Decision {
                $name(event)
            }
        }
        $crate::export_filter!(__FanwireOneFunctionFilter);
    };
}

#[cfg(feature = "event-filter")]
mod glue {
    use super::*;
    use crate::wit::exports::fanwire::plugin::filter as w;
    use crate::wit::types as t;

    #[doc(hidden)]
    pub fn __prepare<F: EventFilter>(group: t::Subscription) -> w::Verdict {
        match F::prepare(&group.into()) {
            Verdict::AllowAll => w::Verdict::AllowAll,
            Verdict::DenyAll(reason) => w::Verdict::DenyAll(reason),
            Verdict::PerEvent { fields, context } => {
                w::Verdict::PerEvent(w::PerEvent { fields, context })
            }
        }
    }

    #[doc(hidden)]
    pub fn __decide<F: EventFilter>(event: t::Event, contexts: Vec<String>) -> Vec<w::Decision> {
        let event: Event = event.into();
        contexts
            .iter()
            .map(|context| match F::decide(&event, context) {
                Decision::Allow => w::Decision::Allow,
                Decision::Deny(reason) => w::Decision::Deny(reason),
                Decision::Redact(paths) => w::Decision::Redact(paths),
                Decision::Replace(value) => w::Decision::Replace(value.to_string()),
            })
            .collect()
    }
}

#[cfg(feature = "event-filter")]
pub use glue::{__decide, __prepare};
